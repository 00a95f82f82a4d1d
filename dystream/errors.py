"""User-facing errors: each says what is wrong and what to do about it.

The CLI prints these as one line (no traceback) and exits with status 2; a server
turns them into a 4xx answer for the one session that caused them.
"""


class DystreamError(Exception):
    """An error caused by the user's input or environment, with a fix in its message."""


class InputError(DystreamError, ValueError):
    """Bad input data: a missing or unreadable file, wrong shape, no face, ..."""


class MissingDependencyError(DystreamError, RuntimeError):
    """An optional engine or package is not installed; the message names the install command."""
