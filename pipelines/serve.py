"""Serve both flows as Prefect deployments: `retrain` on the cron from params, `enroll-data` polling.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m pipelines.serve

Runs until stopped; the deployments and their schedules show in the Prefect UI.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from pipelines.enroll_data import enroll_data
from pipelines.retrain import retrain
from pipelines.tasks import run_from_command_line
from voicelock.params import load_params


def main(repo: str = ".") -> None:
    repo = str(Path(repo).resolve())
    p = load_params(Path(repo) / "params.yaml").promotion
    serve(
        retrain.to_deployment(name="weekly-retrain", schedule=Cron(p.schedule_cron, timezone=p.schedule_timezone),
                              parameters={"repo": repo}, concurrency_limit=1,
                              description="Re-run the DVC pipeline and promote a model that is not worse"),
        enroll_data.to_deployment(name="owner-recordings", interval=p.enroll_data_interval_s,
                                  parameters={"repo": repo}, concurrency_limit=1,
                                  description="Fine-tune again when new owner recordings arrive"),
    )


if __name__ == "__main__":
    run_from_command_line(main, "python -m pipelines.serve",
                          "Serve the retrain (cron) and enroll-data (interval) deployments to a Prefect server until stopped.")
