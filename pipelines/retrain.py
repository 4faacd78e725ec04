"""Flow `retrain`: every DVC stage in order, then the promotion gate.

    python -m pipelines.retrain            # one run now (a temporary local Prefect server starts by itself)
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.states import Completed, State

from pipelines.tasks import dvc_stage, dvc_stages, gate, promote_task
from voicelock.params import load_params


def gate_and_report(repo: str, production_name: str) -> State:
    """Gate the packaged candidate, publish both metric sets, promote or end as "Not promoted"."""
    logger = get_run_logger()
    decision = gate(repo)
    create_table_artifact(key="candidate-vs-production", table=decision.table(),
                          description=f"candidate {decision.candidate_tag} vs production "
                                      f"{decision.production_tag or '(none)'}: " + "; ".join(decision.reasons))
    if not decision.promote:
        logger.warning("not promoted: %s", "; ".join(decision.reasons))
        return Completed(name="Not promoted", message="; ".join(decision.reasons),
                         data={"promoted": False, "candidate": decision.candidate_tag,
                               "production": decision.production_tag})
    tag = promote_task(decision.candidate_tag, production_name)
    logger.info("promoted %s as %s", decision.candidate_tag, tag)
    return Completed(message=f"promoted {tag}", data={"promoted": True, "candidate": decision.candidate_tag,
                                                      "production": tag})


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".") -> State:
    """Run the pipeline through DVC (unchanged stages are skipped) and promote only a model that is not worse."""
    repo = str(Path(repo).resolve())
    params = load_params(Path(repo) / "params.yaml")
    download = dvc_stage.with_options(name="download", retries=params.promotion.download_retries,
                                      retry_delay_seconds=params.promotion.retry_delay_s)
    for stage in dvc_stages(repo):
        (download if stage == "download" else dvc_stage.with_options(name=stage))(stage, repo)
    return gate_and_report(repo, params.service.model_name)


if __name__ == "__main__":
    retrain()
