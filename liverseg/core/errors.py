"""The one error root and the one exit-code table of every liverseg command.

Every error a user can cause (a bad file, config key, checkpoint, model or device)
is a :class:`LiversegError`; its message is one line that names the file, CSV row or
key. Commands built with :class:`liverseg.core.cli.Command` turn it into that line
on stderr and exit code :data:`EXIT_USAGE`, never a traceback (``--debug`` or
``LIVERSEG_DEBUG=1`` shows one).

Exit codes (docs/inference-and-volumes.md repeats this table, the README in one line):

====  ==========================================================================
0     all done
1     the batch ran and some inputs failed (or a parity / benchmark row failed)
2     usage error, or a bad input file, config, checkpoint, model or device,
      reported before any work where it can be known
3     the disk is full (ENOSPC / EDQUOT): what was written so far is kept
130   interrupted (Ctrl-C or SIGTERM); ``liverseg-infer --resume`` finishes the run
====  ==========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DISK_FULL = 3
EXIT_INTERRUPTED = 130


class LiversegError(Exception):
    """Root of every error a user can cause; the message is one line naming the file, row or key."""

    exit_code = EXIT_USAGE


class DataError(LiversegError, ValueError):
    """Bad input data; the message names the file and, for CSVs, the row."""


class ConfigError(LiversegError, ValueError):
    """A config key that is unknown, missing or of the wrong type or value; names the key."""


class CheckpointError(LiversegError, ValueError):
    """A checkpoint that is missing, corrupt, foreign or malformed; names the file."""


class ContractError(LiversegError, ValueError):
    """A model file without a (valid) liverseg contract, or one the engine cannot load; names the file."""


class DeviceError(LiversegError, RuntimeError):
    """A requested device or execution provider that cannot be used; the message says why."""


class ExportError(LiversegError, ValueError):
    """An export that cannot be done; the message names the cause."""


class UsageError(LiversegError, ValueError):
    """A combination of options or arguments that cannot work."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__


def describe(e: BaseException, limit: int = 300) -> str:
    """``TypeName: first line`` of an exception, for result rows that record an error instead of raising."""
    text = first_line(e, limit)
    return type(e).__name__ if text == type(e).__name__ else f"{type(e).__name__}: {text}"
