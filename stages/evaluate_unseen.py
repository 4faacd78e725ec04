"""Stage evaluate_unseen: the released model on unseen voices, at its shipped thresholds."""

from voicelock.cli import run_stage
from voicelock.evaluation import evaluate_unseen
from voicelock.params import Params


def main(params: Params) -> None:
    """Write metrics/ood.json and plots/ood/* (never re-calibrating on these voices)."""
    evaluate_unseen(params)


if __name__ == "__main__":
    run_stage(main)
