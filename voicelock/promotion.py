"""The promotion gate: a candidate becomes the production model only if it is not worse.

Production is re-evaluated on the candidate's validation and test splits (thresholds calibrated the
same way), and at those thresholds on the unseen-voices corpus, so the comparison is always on the
same speakers, whatever data production was trained on. The unseen voices are gated too: a model
that gains a point in-domain by fitting the training voices tighter can lose more on voices it never
met (docs/decisions.md has such changes), and those are the voices of real users. Each rule allows
a tolerance from params.yaml (`tolerance`, `ood_tolerance`); a candidate metric that is missing or
not a finite number counts as worse. Promotion copies the candidate into the production model name,
which is what the service loads (`service.model_tag`, e.g. `voicelock:latest`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voicelock.errors import VoicelockError
from voicelock.params import Params
from voicelock.promotion_rules import RULES, finite_number

log = logging.getLogger(__name__)

# The unseen-voices figures carry this prefix in the gate's metric dicts and table.
OOD = "ood."


def gated_metrics(ood: bool = True) -> list[str]:
    """Every metric the gate compares: the in-domain rules, then (with `ood`) the same on the unseen voices."""
    return list(RULES) + ([OOD + metric for metric in RULES] if ood else [])


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    candidate: dict[str, float]
    production: dict[str, float] | None
    candidate_tag: str = ""
    production_tag: str | None = None
    compared: list[str] = field(default_factory=gated_metrics)

    def table(self) -> list[dict]:
        """One row per gated metric (candidate next to production), for the Prefect artifact."""
        return [{"metric": metric, "candidate": self.candidate.get(metric),
                 "production": None if self.production is None else self.production.get(metric)}
                for metric in self.compared]


def tolerance_of(metric: str, tolerances: dict[str, float]) -> float:
    """A FAR's own tolerance when set (e.g. `far_other_speaker_password`), else the one for every FAR
    (`far`); other metrics by name; 0 when unset."""
    if metric.startswith("far_") and metric not in tolerances:
        return tolerances.get("far", 0.0)
    return tolerances.get(metric, 0.0)


def compare(candidate: dict, production: dict | None, tolerance: dict[str, float],
            ood_tolerance: dict[str, float] | None, max_unseen_far: float | None = None) -> tuple[bool, list[str]]:
    """Is `candidate` not worse than `production` on every rule (within tolerance)? With reasons.

    With `ood_tolerance` (callers must say: None compares the in-domain figures only), the
    unseen-voices figures (keys `ood.<metric>`) are rules too, each with its tolerance from there,
    and with `max_unseen_far` no unseen FAR of the candidate may exceed it — so tolerated steps back
    cannot add up, promotion after promotion, past the promise. A candidate figure that is missing or
    not a finite number fails its rule; a production figure like that is named and not compared."""
    if production is None:
        return True, ["no production model yet"]
    reasons, ok = [], True
    for metric in gated_metrics(ood_tolerance is not None):
        base = metric.removeprefix(OOD)
        tol = tolerance_of(base, ood_tolerance if metric.startswith(OOD) else tolerance)
        c, p = finite_number(candidate.get(metric)), finite_number(production.get(metric))
        if c is None:
            ok = False
            reasons.append(f"{metric}: candidate has no value")
            continue
        if metric.startswith(OOD + "far_") and max_unseen_far is not None and c > max_unseen_far:
            ok = False
            reasons.append(f"{metric}: {c:.4f} above promotion.max_unseen_far {max_unseen_far}")
        if p is None:
            reasons.append(f"{metric}: production has no value (not compared)")
            continue
        worse = (p - c) if RULES[base] else (c - p)
        if worse > tol:
            ok = False
            reasons.append(f"{metric}: {c:.4f} vs production {p:.4f} (worse by {worse:.4f} > tolerance {tol})")
    if ok:
        reasons.append("not worse than production on any rule compared")
    return ok, reasons


def with_prefix(metrics: dict, prefix: str = OOD) -> dict[str, float]:
    """The numbers of an unseen-voices metrics dict under `ood.<metric>` keys (nested sections left out)."""
    return {prefix + k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def production_model(name: str):
    """The newest model saved under the production name, or None."""
    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    try:
        return bentoml.models.get(f"{name}:latest")
    except BentoNotFound:
        return None


MODEL_TAG_ENV = "VOICELOCK_MODEL_TAG"


def served_model_tag(params: Params, environ: Mapping[str, str] = os.environ) -> str:
    """The production model's tag, as the service and the CLI both resolve it: `VOICELOCK_MODEL_TAG`
    when set, else `service.model_tag` (the newest promoted model)."""
    return environ.get(MODEL_TAG_ENV) or params.service.model_tag


def served_model_dir(params: Params, environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the production model in the BentoML store: what the CLI uses unless given --model."""
    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    tag = served_model_tag(params, environ)
    try:
        return Path(bentoml.models.get(tag).path)
    except BentoNotFound:
        raise VoicelockError(f"no model {tag} in the BentoML store — run `make repro` (or `voicelock promote` after "
                             f"`dvc repro`), or name a model folder with --model (e.g. models/release)") from None


def candidate_model(params: Params):
    """The candidate the package stage recorded in service.package_record."""
    import bentoml

    record = Path(params.service.package_record)
    if not record.exists():
        raise VoicelockError(f"{record}: no packaged candidate — run the package stage (dvc repro package)")
    tag = json.loads(record.read_text())["tag"]
    return bentoml.models.get(tag)


def production_metrics(model_dir: str | Path, params: Params) -> dict[str, float]:
    """Production's figures on the current splits: thresholds calibrated on the validation speakers,
    measured on the test speakers and (keys `ood.<metric>`) on the unseen voices at those thresholds —
    what the candidate's own evaluate and evaluate_unseen stages measured of it."""
    from voicelock.evaluation import evaluate_model, unseen_metrics
    from voicelock.release import Release

    release = Release.load(model_dir, calibrated=False)  # re-calibrated here, by this voicelock's rule
    metrics, _, scorer, templates = evaluate_model(release.model, params)
    # The unseen clips go through production's own feature settings, as its release was measured.
    ood, _ = unseen_metrics(release.model, release.extractor(), metrics["thresholds"], scorer, templates, params)
    return {**metrics, **with_prefix(ood)}


def unservable(model_dir: str | Path) -> str | None:
    """Why this voicelock refuses to serve the release at `model_dir` (e.g. one evaluated before a
    threshold of today's accept rule existed), or None when it serves it."""
    from voicelock.release import Release

    try:
        Release.load(model_dir)
    except VoicelockError as err:
        return str(err)
    return None


def decide(params: Params) -> GateDecision:
    """Compare the packaged candidate with production, both evaluated on the current splits. A
    candidate this voicelock would not serve (`unservable`) is never promoted.

    A production model this voicelock will not serve is no incumbent to keep: the service would not
    start on it. The candidate then replaces it on its own figures (each present and finite, every
    unseen FAR under `max_unseen_far`), compared with nothing."""
    candidate = candidate_model(params)
    cand_metrics = dict(candidate.info.metadata.get("metrics", {}))
    cand_metrics.update(with_prefix(candidate.info.metadata.get("ood_metrics", {})))
    production = production_model(params.service.model_name)
    if why := unservable(candidate.path):  # the service would refuse to start on it
        return GateDecision(False, [f"{candidate.tag} cannot be served by this voicelock: {why}"], cand_metrics,
                            None, str(candidate.tag), None if production is None else str(production.tag))
    if production is not None and production.info.labels.get("candidate") == str(candidate.tag):
        return GateDecision(False, [f"{candidate.tag} is already in production as {production.tag}"], cand_metrics,
                            None, str(candidate.tag), str(production.tag))
    if production is not None and (why := unservable(production.path)):
        ok, reasons = compare(cand_metrics, {}, params.promotion.tolerance, params.promotion.ood_tolerance,
                              params.promotion.max_unseen_far)
        return GateDecision(ok, [f"production {production.tag} cannot be served by this voicelock, so the "
                                 f"candidate is judged on its own figures: {why}"] + reasons, cand_metrics, None,
                            str(candidate.tag), str(production.tag))
    prod_metrics = None if production is None else production_metrics(production.path, params)
    ok, reasons = compare(cand_metrics, prod_metrics, params.promotion.tolerance, params.promotion.ood_tolerance,
                          params.promotion.max_unseen_far)
    return GateDecision(ok, reasons, cand_metrics, prod_metrics, str(candidate.tag),
                        None if production is None else str(production.tag))


def promote(candidate_tag: str, production_name: str) -> str:
    """Copy a stored candidate into the production name; return the new production tag."""
    import bentoml

    candidate = bentoml.models.get(candidate_tag)
    with bentoml.models.create(
        production_name,
        labels={**candidate.info.labels, "stage": "production", "candidate": str(candidate.tag)},
        metadata=candidate.info.metadata,
    ) as model:
        for item in Path(candidate.path).iterdir():
            if item.is_file() and item.name not in ("model.yaml",):
                shutil.copy2(item, model.path_of(item.name))
        tag = str(model.tag)
    log.info("promoted %s to %s", candidate_tag, tag)
    return tag


def gate_and_promote(params: Params) -> GateDecision:
    """The whole gate: decide, and promote when the candidate is not worse."""
    decision = decide(params)
    if decision.promote:
        decision.production_tag = promote(decision.candidate_tag, params.service.model_name)
    return decision
