"""Stage finetune: the whole network tuned on the owner's recordings, with corpus speakers as impostors."""

from voicelock.cli import run_stage
from voicelock.model.finetune import finetune
from voicelock.params import Params


def main(params: Params) -> None:
    """Start from models/pretrained, learn the owner and password decisions, keep the embeddings usable."""
    finetune(params)


if __name__ == "__main__":
    run_stage(main)
