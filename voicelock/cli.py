"""The `voicelock` command, and the one wrapper every DVC stage runs under.

Bad input (VoicelockError) becomes one line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from voicelock.errors import VoicelockError
from voicelock.params import DEFAULT_PARAMS, Params, load_params


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_stage(stage: Callable[[Params], object], argv: list[str] | None = None) -> None:
    """Entry point of a DVC stage script: parse --params, load them, run, map user errors to exit 2."""
    parser = argparse.ArgumentParser(description=stage.__doc__)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    _setup_logging()
    try:
        stage(load_params(args.params))
    except VoicelockError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_data(args: argparse.Namespace) -> None:
    from voicelock.data.acquire import check_folder

    params = load_params(args.params)
    n = check_folder(args.folder, params.data.sample_rate)
    print(f"{args.folder}: {n} clips in Speech Commands layout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicelock", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-data", help="validate a folder in Speech Commands layout")
    check.add_argument("folder", type=Path)
    check.set_defaults(func=_check_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        args.func(args)
    except VoicelockError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
