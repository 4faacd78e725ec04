"""Stage evaluate: thresholds calibrated on validation speakers, metrics on test speakers, the release."""

from voicelock.cli import run_stage
from voicelock.evaluation import run_evaluation
from voicelock.params import Params


def main(params: Params) -> None:
    """Write metrics/evaluate.json, plots/evaluate/*, and models/release (model + thresholds)."""
    run_evaluation(params, params.evaluate.metrics_file, params.evaluate.plots_dir)


if __name__ == "__main__":
    run_stage(main)
