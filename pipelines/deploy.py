"""Register both flows with a Prefect work pool: the path for running the pipeline on other machines.

    prefect work-pool create voicelock --type process
    python -m pipelines.deploy --pool voicelock            # once, against the server in PREFECT_API_URL
    prefect worker start --pool voicelock                  # on each machine that holds a checkout

Unlike `pipelines.serve`, where the serving process runs the flows itself, a deployment here is only a
record on the server; whichever worker polls the pool runs each flow run, from this checkout's code
(`--repo` must be the same path on the worker's machine, e.g. a shared or identically placed
checkout). Schedules, parameters and the concurrency limit are those of `pipelines.serve`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.schedules import Cron

from pipelines.enroll_data import enroll_data
from pipelines.retrain import retrain
from voicelock.params import load_params

CODE = Path(__file__).resolve().parents[1]  # the checkout whose pipelines/ package the workers run


def deploy(repo: str, pool: str) -> list[str]:
    """Create or update the two deployments in `pool`; their ids."""
    repo = str(Path(repo).resolve())
    p = load_params(Path(repo) / "params.yaml").promotion
    common = {"work_pool_name": pool, "parameters": {"repo": repo}, "concurrency_limit": 1,
              "print_next_steps": False}
    return [str(retrain.from_source(source=str(CODE), entrypoint="pipelines/retrain.py:retrain").deploy(
                name="weekly-retrain", schedule=Cron(p.schedule_cron, timezone=p.schedule_timezone),
                description="Re-run the DVC pipeline, promote a model that is not worse, push to the DVC remote",
                **common)),
            str(enroll_data.from_source(source=str(CODE), entrypoint="pipelines/enroll_data.py:enroll_data").deploy(
                name="owner-recordings", interval=p.enroll_data_interval_s,
                description="Fine-tune again when new owner recordings arrive", **common))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True,
                        help="the Prefect work pool (prefect work-pool create NAME --type process)")
    parser.add_argument("--repo", default=".", help="the voicelock checkout the runs work in (default: here)")
    args = parser.parse_args(argv)
    for deployment in deploy(args.repo, args.pool):
        print(f"deployed {deployment} to work pool {args.pool}")


if __name__ == "__main__":
    main()
