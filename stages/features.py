"""Stage features: log-mel (or MFCC) features per split, cached for training."""

from pathlib import Path

from voicelock.cli import run_stage
from voicelock.data.manifest import read_manifest
from voicelock.features import build_feature_cache
from voicelock.params import Params


def main(params: Params) -> None:
    """Read the validated manifest and write data/features/{split}.npy + .csv + meta.json."""
    manifest = read_manifest(Path(params.prepare.out_dir) / "manifest.csv")
    build_feature_cache(manifest, params.data.raw_dir, params.features, params.data.sample_rate,
                        params.features.out_dir)


if __name__ == "__main__":
    run_stage(main)
