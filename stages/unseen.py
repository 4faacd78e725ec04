"""Stage unseen: the evaluation-only corpus of voices unlike any training voice (voicelock/data/unseen.py)."""

from voicelock.cli import run_stage
from voicelock.data.unseen import synthesize_unseen
from voicelock.params import Params


def main(params: Params) -> None:
    """Generate data/ood: unseen espeak-ng accents × timbres and flite voices, with background noise."""
    synthesize_unseen(params.data.synth, params.ood, params.seed, params.data.sample_rate,
                      params.features.clip_seconds)


if __name__ == "__main__":
    run_stage(main)
