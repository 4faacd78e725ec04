"""One exception type for bad user input, so every door can turn it into a clear message.

CLI and stages print it as one line and exit with code 2; the service answers with its `status`
(4xx) and the message as JSON. Anything else that escapes is a bug in voicelock, not the user's
fault: the service logs it and answers a generic 500 without a stack trace.
"""


class VoicelockError(Exception):
    """Bad input (file, folder, parameter, request): the message names what is wrong and what would fix it."""

    status = 400


class NotFound(VoicelockError):
    """The named user or model does not exist."""

    status = 404


class TooLarge(VoicelockError):
    """A request over the configured size limit."""

    status = 413


class Busy(VoicelockError):
    """The worker's compute queue is full, or a request ran past its time: retry later (never an unlock)."""

    status = 503


class LockedOut(VoicelockError):
    """Too many failed unlocks in a row: the user is locked for a while."""

    status = 429

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s
