"""User-facing errors.

Anything raised as `LmforgeError` is a problem with the user's input (config, files, shapes); the
CLI prints its message on one line and exits with status 2 instead of showing a traceback.
"""


class LmforgeError(Exception):
    """A problem the user can fix; its message names the culprit."""


class ConfigError(LmforgeError):
    """A bad config key, value or combination of values."""
