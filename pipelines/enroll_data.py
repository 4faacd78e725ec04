"""Flow `enroll-data`: new owner recordings → re-run only owner, fine-tuning, evaluation, packaging.

The owner folder is outside DVC's view (it is the user's), so the flow fingerprints it (names, sizes,
modification times) and does nothing when it has not changed since the last run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from pipelines.tasks import (CheckoutBusy, checkout_lock, dvc_push, dvc_stage, dvc_stages, gate_and_report,
                             run_from_command_line)
from voicelock.params import load_params

FINGERPRINT = "owner_fingerprint.json"


def fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.wav")):
        st = path.stat()
        h.update(f"{path.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@flow(name="enroll-data", log_prints=True)
def enroll_data(repo: str = ".") -> State:
    repo_path = Path(repo).resolve()
    params = load_params(repo_path / "params.yaml")
    logger = get_run_logger()
    if params.owner.source != "folder":  # synthetic: the pipeline makes them, and retrain re-runs it
        logger.info("owner.source is %s: no recordings arrive from outside", params.owner.source)
        return Completed(name="No new recordings", message=f"owner.source is {params.owner.source}")
    source = Path(params.owner.folder)
    source = source if source.is_absolute() else repo_path / source
    record = repo_path / Path(params.finetune.out_dir) / FINGERPRINT
    current = fingerprint(source)
    if record.exists() and json.loads(record.read_text()).get("fingerprint") == current:
        logger.info("no new owner recordings in %s", source)
        return Completed(name="No new recordings", message=f"{source} unchanged")
    try:
        with checkout_lock(repo_path, wait_s=0):  # busy: the next poll comes soon
            # The owner stage reads a folder DVC does not track: force it; the rest re-run if it changed.
            dvc_stage.with_options(name="owner")("owner", str(repo_path), force=True)
            for stage in dvc_stages(repo_path, start="finetune"):  # what the owner's recordings feed
                dvc_stage.with_options(name=stage)(stage, str(repo_path))
            record.write_text(json.dumps({"fingerprint": current}))
            state = gate_and_report(str(repo_path), params.service.model_name)
            dvc_push(str(repo_path))
            return state
    except CheckoutBusy as e:
        logger.info("%s", e)
        return Completed(name="Skipped", message="another pipeline run holds the checkout; next poll retries")


if __name__ == "__main__":
    run_from_command_line(enroll_data, "python -m pipelines.enroll_data",
                          "Re-run owner → fine-tuning → evaluation → packaging if the owner's recordings "
                          "changed, then the gate.")
