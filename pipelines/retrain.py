"""Flow `retrain`: every DVC stage in order, the promotion gate, then `dvc push` to the default remote.

    python -m pipelines.retrain            # one run now (a temporary local Prefect server starts by itself)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import State

from pipelines.tasks import checkout_lock, dvc_push, dvc_stage, dvc_stages, gate_and_report, run_from_command_line
from voicelock.params import load_params


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".") -> State:
    """Run the pipeline through DVC (unchanged stages are skipped) and promote only a model that is not worse."""
    repo = str(Path(repo).resolve())
    params = load_params(Path(repo) / "params.yaml")
    download = dvc_stage.with_options(name="download", retries=params.promotion.download_retries,
                                      retry_delay_seconds=params.promotion.retry_delay_s)
    with checkout_lock(repo, params.promotion.checkout_wait_s):
        for stage in dvc_stages(repo):
            (download if stage == "download" else dvc_stage.with_options(name=stage))(stage, repo)
        state = gate_and_report(repo, params.service.model_name)
        dvc_push(repo)
        return state


if __name__ == "__main__":
    run_from_command_line(retrain, "python -m pipelines.retrain",
                          "Run every DVC stage (unchanged ones are skipped), then the promotion gate.")
