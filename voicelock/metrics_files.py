"""The evaluation's files: rates in the DVC metrics file, everything else beside it.

`dvc metrics show` and `dvc metrics diff` list every number of a metrics file; trial and speaker
counts, thresholds and calibration figures among the rates made both hard to read and compared
counts as if they were results. So an evaluation's result is split in two: the rates (the metrics
file) and the details (`details_file`).
"""

from __future__ import annotations

import json
from pathlib import Path

# What an evaluation reports besides its rates: trial and speaker counts, the calibrated thresholds and
# the replay calibration's closest genuine pair.
DETAIL_KEYS = ("speakers", "clips", "thresholds", "replay_closest_genuine")


def _is_detail(key: str) -> bool:
    return key in DETAIL_KEYS or key.startswith("trials_") or key.endswith("_trials_genuine")


def split_details(result: dict) -> tuple[dict, dict]:
    """(rates, details) of an evaluation's result; nested sections (e.g. per engine) split alike."""
    rates, details = {}, {}
    for key, value in result.items():
        if isinstance(value, dict) and not _is_detail(key):
            rates[key], details[key] = split_details(value)
        else:
            (details if _is_detail(key) else rates)[key] = value
    return rates, details


def write_metrics(result: dict, metrics_path: str | Path, details_path: str | Path) -> None:
    """The rates to `metrics_path` (a DVC metrics file), counts and thresholds to `details_path`."""
    rates, details = split_details(result)
    for path, part in ((Path(metrics_path), rates), (Path(details_path), details)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(part, indent=1))
