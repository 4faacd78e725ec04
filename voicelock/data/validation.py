"""Data checks on the manifest, as a Great Expectations suite.

Three views are validated: the clips themselves, the speakers (each in exactly one split) and the
words (each present in every split). A failure names the expectation and the offending files, and
the full GX result is kept as a JSON report either way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from voicelock.data.layout import SPLITS
from voicelock.params import PrepareParams

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
log = logging.getLogger(__name__)


@dataclass
class ValidationOutcome:
    success: bool
    failures: list[str]
    report: dict


def _suites(params: PrepareParams, sample_rate: int) -> dict[str, tuple[str, list]]:
    """view name → (column that identifies a row, expectations)."""
    import great_expectations as gx

    E = gx.expectations
    mostly = 1.0 - params.max_bad_fraction
    clips = [E.ExpectColumnValuesToNotBeNull(column=c) for c in
             ("path", "word", "speaker", "split", "sample_rate", "channels", "duration", "peak", "rms")]
    clips += [
        E.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=[sample_rate]),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
        E.ExpectColumnValuesToBeBetween(column="duration", min_value=params.min_duration_s,
                                        max_value=params.max_duration_s + 1e-3),
        E.ExpectColumnValuesToBeBetween(column="rms", min_value=params.silence_rms, mostly=mostly,
                                        meta={"why": "silent clips"}),
        E.ExpectColumnValuesToBeBetween(column="peak", max_value=params.clipping_peak, strict_max=True,
                                        mostly=mostly, meta={"why": "clipped clips"}),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        E.ExpectColumnValuesToBeUnique(column="path"),
    ]
    speakers = [E.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1,
                                                meta={"why": "a speaker in two splits leaks into evaluation"})]
    words = [E.ExpectColumnValuesToBeBetween(column="n_splits", min_value=len(SPLITS), max_value=len(SPLITS),
                                             meta={"why": "every word must be in every split"})]
    return {"clips": ("path", clips), "speakers": ("speaker", speakers), "words": ("word", words)}


def _views(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    speakers = manifest.groupby("speaker")["split"].nunique().rename("n_splits").reset_index()
    words = manifest.groupby("word")["split"].nunique().rename("n_splits").reset_index()
    return {"clips": manifest, "speakers": speakers, "words": words}


def validate_manifest(manifest: pd.DataFrame, params: PrepareParams, sample_rate: int) -> ValidationOutcome:
    """Run the suite; return success, one readable line per failed expectation, and the GX report."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("manifest")
    views = _views(manifest)
    failures: list[str] = []
    report: dict = {"success": True, "views": {}}
    for name, (id_column, expectations) in _suites(params, sample_rate).items():
        batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"voicelock_{name}", expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate_{name}", data=batch_def, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": views[name]},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]},
        )
        report["views"][name] = result.to_json_dict()
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            offending = [row.get(id_column) for row in (r.result.get("unexpected_index_list") or [])]
            shown = ", ".join(str(o) for o in offending[:5]) + (f" … ({len(offending)} in all)" if len(offending) > 5 else "")
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            why = f" [{cfg.meta['why']}]" if cfg.meta and "why" in cfg.meta else ""
            failures.append(f"{cfg.type}({kwargs}){why} failed for {id_column}s: {shown or '(whole column)'}")
    report["success"] = not failures
    report["failures"] = failures
    return ValidationOutcome(not failures, failures, report)


# Great Expectations stamps every run with fresh ids and clock times; a tracked output holding them
# changes on every run, so a fresh `dvc repro` could never match the committed dvc.lock.
VOLATILE_KEYS = frozenset({"id", "run_id", "run_time", "validation_time", "ge_load_time", "validation_id"})


def _stable(value):
    """The report without its run ids and times: the same data, the same bytes."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def write_report(outcome: ValidationOutcome, path: str | Path) -> None:
    Path(path).write_text(json.dumps(_stable(outcome.report), indent=1, default=str))
