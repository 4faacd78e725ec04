"""voicelock: voice unlock that opens only for the right person saying the right password.

The core package. `stages/` (DVC), `pipelines/` (Prefect) and `service/` (BentoML) are thin doors
into it; anything two doors need lives here.
"""

from voicelock.errors import VoicelockError

__all__ = ["VoicelockError"]
__version__ = "0.1.0"
