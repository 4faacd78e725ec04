"""Stage owner: the owner's own recordings at owner.out_dir (synthetic held-out speaker or a folder)."""

from voicelock.cli import run_stage
from voicelock.data.acquire import acquire_owner
from voicelock.params import Params


def main(params: Params) -> None:
    """Generate or import the owner's recordings."""
    acquire_owner(params)


if __name__ == "__main__":
    run_stage(main)
