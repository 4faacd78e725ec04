"""Stage download: put the corpus named by data.source at data.raw_dir."""

from voicelock.cli import run_stage
from voicelock.data.acquire import acquire_corpus
from voicelock.params import Params


def main(params: Params) -> None:
    """Fetch (speech_commands), import (folder) or generate (synth) the corpus."""
    acquire_corpus(params)


if __name__ == "__main__":
    run_stage(main)
