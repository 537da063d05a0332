"""The one exception tree of mlimpute.

Every error the package raises on purpose derives from :class:`MlimputeError`, so a caller can
catch them all; the subclasses also derive from the matching built-in (``ValueError`` /
``RuntimeError``) so generic handlers keep working.
"""

from __future__ import annotations

import re

__all__ = [
    "MlimputeError",
    "SpecError",
    "DataError",
    "ConvergenceError",
    "ConvergenceWarning",
]


# terminal colour codes: formulaic's messages carry them, which a log or the CLI's one line shows
# as ⧛\x1b[1;31mname\x1b[0m⧚
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MlimputeError(Exception):
    """Base class of every error raised by mlimpute."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(_ANSI.sub("", a) if isinstance(a, str) else a for a in args))


class SpecError(MlimputeError, ValueError):
    """The model specification (or a configuration) is invalid on its own terms."""


class DataError(MlimputeError, ValueError):
    """The data do not fit the specification (unknown column, wrong type, bad values)."""


class ConvergenceError(MlimputeError, RuntimeError):
    """An estimation or sampling procedure failed in a way that makes its result unusable."""


class ConvergenceWarning(UserWarning):
    """R-hat, effective sample size or an optimiser suggests the result needs a closer look."""


class PriorWarning(UserWarning):
    """A variance's posterior is mostly its prior: the data say little about it."""
