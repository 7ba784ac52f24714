"""Exceptions with messages meant for the user.

The CLI turns every :class:`GnvcError` into one line on stderr and a non-zero exit code, so
anything raised as one of these must already say what is wrong and what to do. The exit code
says whose move it is (``docs/cli.md``): a :class:`UsageError` (2) is fixed by changing the
command line or the files it names; any other :class:`GnvcError` (1) is a runtime failure.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator


class GnvcError(Exception):
    """Base class of all errors that carry a user-facing message (exit status 1 unless a usage error)."""


class UsageError(GnvcError):
    """The command cannot work as given: a bad option, a bad input file the user named (exit status 2)."""


class InputError(UsageError):
    """An input video or file cannot be used (unreadable, empty, wrong geometry)."""


class BitstreamError(UsageError):
    """A ``.gnvc`` file is truncated, corrupted, foreign or of an unsupported version."""


class WeightsError(UsageError):
    """A model directory is missing, incomplete, tampered with, or does not match what is asked of it."""


class DiskFullError(GnvcError):
    """An output could not be written: its filesystem is full, a quota or a file-size limit was hit.

    Raised by gnvc's writers (which remove their temporaries first), so a full disk is one clear
    line, never a traceback, and never a half-written output.
    """


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_NO_SPACE_WHY = {errno.ENOSPC: "disk full", errno.EFBIG: "file size limit reached", errno.EDQUOT: "disk quota exceeded"}


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is an OSError saying the write ran out of space (ENOSPC, EFBIG, EDQUOT)."""
    return isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS


@contextlib.contextmanager
def disk_full_as_error(target: object) -> Iterator[None]:
    """Turn a no-space OSError raised inside the block into :class:`DiskFullError` naming ``target``."""
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE_ERRNOS:
            raise
        why = _NO_SPACE_WHY[e.errno]
        raise DiskFullError(f"{target}: no space left on the device ({why}); the output was not written") from None


class ConfigError(UsageError):
    """A profile or parameter file is invalid."""
