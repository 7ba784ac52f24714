"""Exceptions with messages meant for the user.

The CLI turns every :class:`GnvcError` into one line on stderr and a non-zero exit code,
so anything raised as one of these must already say what is wrong and what to do.
"""


class GnvcError(Exception):
    """Base class of all errors that carry a user-facing message."""


class InputError(GnvcError):
    """An input video or file cannot be used (unreadable, empty, wrong geometry)."""


class BitstreamError(GnvcError):
    """A ``.gnvc`` file is truncated, corrupted, foreign or of an unsupported version."""


class WeightsError(GnvcError):
    """A model directory is missing, incomplete, or does not match what is asked of it."""


class ConfigError(GnvcError):
    """A profile or parameter file is invalid."""
