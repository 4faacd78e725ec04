"""Stage package: the evaluated model into the BentoML model store (what `bentoml serve` loads)."""

from voicelock.cli import run_stage
from voicelock.packaging import package_model
from voicelock.params import Params


def main(params: Params) -> None:
    """Save models/release as voicelock:<version> with its metrics, code and data versions."""
    print(package_model(params, params.service.package_record))


if __name__ == "__main__":
    run_stage(main)
