"""One exception type for bad user input, so every door can turn it into a clear message.

CLI and stages print it as one line and exit with code 2; the service answers 4xx JSON. Anything
else that escapes is a bug in voicelock, not the user's fault, and is allowed to show a traceback.
"""


class VoicelockError(Exception):
    """Bad input (file, folder, parameter): the message names what is wrong and what would fix it."""
