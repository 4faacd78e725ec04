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

from voicelock import package_version
from voicelock.errors import VoicelockError
from voicelock.params import DEFAULT_PARAMS, Params, load_params


def _setup_logging() -> None:
    """voicelock's own progress at INFO; other libraries' at WARNING and up.

    Why: at INFO, Great Expectations alone wrote ~200 lines of its registry's housekeeping into every
    `make repro` (and matplotlib its font cache), burying the stages' own lines; their warnings and
    errors still show.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("voicelock").setLevel(logging.INFO)


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


def _model_dir(args: argparse.Namespace, params: Params) -> Path:
    """--model, else the production model the service serves (one source of truth for both)."""
    from voicelock.promotion import served_model_dir

    return args.model or served_model_dir(params)


def _sealer(params: Params):
    from voicelock.sealing import Sealer

    return Sealer.from_environment(params.service.takes_key_env)


def _enroll(args: argparse.Namespace) -> None:
    from voicelock.enrollment import Unlocker

    params = load_params(args.params)
    lock = Unlocker(_model_dir(args, params), params.enroll)
    sealer = _sealer(params)
    template = lock.enroll_files(args.clips, sealer)
    template.save(args.template)
    kept = "recordings sealed with the takes key" if sealer else \
        f"recordings not kept: set {params.service.takes_key_env} so a new model can re-embed them"
    print(f"enrolled {template.clips} clips into {args.template} (model {template.model}; {kept})")


def _unlock(args: argparse.Namespace) -> None:
    import json

    from voicelock.enrollment import Template, Unlocker

    params = load_params(args.params)
    lock = Unlocker(_model_dir(args, params), params.enroll)
    template = Template.load(args.template)
    if template.model != lock.model_id:
        try:
            template = lock.reembed(template, _sealer(params))
        except VoicelockError as e:
            raise VoicelockError(f"{args.template}: made with another model ({template.model or 'unrecorded'}) and "
                                 f"cannot be moved to {lock.model_id}: {e} — enroll again") from None
        template.save(args.template)
        print(f"{args.template}: re-made with model {lock.model_id} from its sealed recordings", file=sys.stderr)
    decision = lock.verify_file(template, args.clip)
    print(json.dumps(decision.explain(), indent=1))
    if not decision.unlocked:
        raise SystemExit(1)


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from voicelock.evaluation import evaluate_folder

    params = load_params(args.params)
    metrics = evaluate_folder(_model_dir(args, params), args.data, params.evaluate, params.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(metrics, indent=1))
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("trials_")}, indent=1))


def _promote(args: argparse.Namespace) -> None:
    from voicelock.promotion import gate_and_promote

    decision = gate_and_promote(load_params(args.params))
    verdict = f"promoted {decision.candidate_tag} as {decision.production_tag}" if decision.promote \
        else f"not promoted: {decision.candidate_tag} (production stays {decision.production_tag})"
    print(verdict + " — " + "; ".join(decision.reasons))


MODEL_HELP = ("a model folder, e.g. models/release (default: the production model the service serves, "
              "service.model_tag or $VOICELOCK_MODEL_TAG, from the BentoML store)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicelock", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-data", help="validate a folder in Speech Commands layout")
    check.add_argument("folder", type=Path, help="the folder: <word>/<speaker>_nohash_<n>.wav")
    check.set_defaults(func=_check_data)

    enroll = sub.add_parser("enroll", help="enroll a password from 3–10 WAV clips of one person")
    enroll.add_argument("clips", type=Path, nargs="+", help="WAV files of the password")
    enroll.add_argument("--template", type=Path, required=True, help="where to write the template (JSON)")
    enroll.add_argument("--model", type=Path, help=MODEL_HELP)
    enroll.set_defaults(func=_enroll)

    unlock = sub.add_parser("unlock", help="score a clip against a template; exit 0 unlocked, 1 rejected")
    unlock.add_argument("clip", type=Path, help="a recording of the password (WAV, FLAC or OGG)")
    unlock.add_argument("--template", type=Path, required=True, help="the template `voicelock enroll` wrote")
    unlock.add_argument("--model", type=Path, help=MODEL_HELP)
    unlock.set_defaults(func=_unlock)

    evaluate = sub.add_parser("evaluate", help="judge a model on any folder in Speech Commands layout")
    evaluate.add_argument("--data", type=Path, required=True,
                          help="a corpus in Speech Commands layout (every speaker is a test speaker)")
    evaluate.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    evaluate.add_argument("--model", type=Path, help=MODEL_HELP)
    evaluate.set_defaults(func=_evaluate)

    promote = sub.add_parser("promote", help="promote the packaged candidate if it is not worse than production")
    promote.set_defaults(func=_promote)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        args.func(args)
    except VoicelockError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
