"""Stage prepare: the manifest of every clip, validated by the Great Expectations suite."""

from pathlib import Path

from voicelock.cli import run_stage
from voicelock.data.manifest import build_manifest
from voicelock.data.validation import validate_manifest, write_report
from voicelock.errors import VoicelockError
from voicelock.params import Params


def main(params: Params) -> None:
    """Build data/prepared/manifest.csv; stop with the failed expectations if the data is bad."""
    out = Path(params.prepare.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.csv").unlink(missing_ok=True)
    manifest = build_manifest(params.data.raw_dir, params.data.validation_percentage, params.data.testing_percentage)
    outcome = validate_manifest(manifest, params.prepare, params.data.sample_rate)
    write_report(outcome, out / "validation.json")
    if not outcome.success:
        raise VoicelockError(f"{params.data.raw_dir}: data checks failed (report: {out / 'validation.json'}): "
                             + " | ".join(outcome.failures))
    manifest.to_csv(out / "manifest.csv", index=False)


if __name__ == "__main__":
    run_stage(main)
