"""The errors a user can act on. The CLI turns each into one line and exit status 2."""

from __future__ import annotations


class BenchError(RuntimeError):
    """A run, a command or an input that cannot go on; the message says why and what to do."""


class DataError(BenchError):
    """A problem with data that the user can fix; the message says how."""


class HParamError(BenchError, ValueError):
    """A hyper-parameter that a method does not have, or a value it cannot take."""


class InvalidRecord(BenchError, ValueError):
    """A result record that is malformed, fails the schema or contradicts itself."""
