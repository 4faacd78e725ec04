"""Stage pretrain: the two-head Siamese network on the corpus's training speakers."""

from voicelock.cli import run_stage
from voicelock.model.pretrain import pretrain
from voicelock.params import Params


def main(params: Params) -> None:
    """Train with mined triplets on both heads; keep the best validation epoch in models/pretrained."""
    pretrain(params)


if __name__ == "__main__":
    run_stage(main)
