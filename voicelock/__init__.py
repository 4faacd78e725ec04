"""voicelock: voice unlock that opens only for the right person saying the right password.

The core package. `stages/` (DVC), `pipelines/` (Prefect) and `service/` (BentoML) are thin doors
into it; anything two doors need lives here.
"""

from voicelock.errors import VoicelockError

__all__ = ["VoicelockError", "package_version"]
__version__ = "0.1.0"


def package_version() -> str:
    """The installed voicelock's version (pyproject.toml), for `--version`, the OpenAPI page and /metrics."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voicelock")
    except PackageNotFoundError:  # run from a checkout (or a Bento's source) without installing it
        return "(not installed)"
