"""Warnings of a run, each said once with how often it happened (no Prefect here).

A fit warning that 19 of 20 imputations share is one line, "… (in 19 of 20 imputations)", on
the console, in Prefect's log, in the report and in the manifest alike. Messages that differ
only in their numbers (a gradient, a parameter value) count as one warning; the first one's
text is kept.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence

__all__ = ["caught", "counted", "tally", "of_run"]

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def caught(records: Sequence[warnings.WarningMessage]) -> list[str]:
    """The distinct warnings of a ``catch_warnings(record=True)`` block, in order, as text."""
    seen: list[str] = []
    for w in records:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in seen:
            seen.append(msg)
    return seen


def _grouped(messages: Iterable[str]) -> list[tuple[str, int]]:
    """Messages that differ only in their numbers as one: (the first one's text, how many)."""
    first: dict[str, str] = {}
    count: dict[str, int] = {}
    for m in messages:
        key = _NUMBER.sub("#", m)
        first.setdefault(key, m)
        count[key] = count.get(key, 0) + 1
    return [(first[k], n) for k, n in count.items()]


def counted(records: Sequence[warnings.WarningMessage]) -> list[str]:
    """The warnings of a ``catch_warnings(record=True)`` block, each once (messages that differ
    only in their numbers count as one, the first one's text kept) with how often it came:
    ``mlimpute analyse`` fits every imputation in one call."""
    return [m + (f" ({n} times)" if n > 1 else "")
            for m, n in _grouped(f"{w.category.__name__}: {w.message}" for w in records)]


def tally(per_unit: Sequence[Sequence[str]], unit: str = "imputations") -> list[str]:
    """Each distinct warning of ``per_unit`` (one list per imputation) once, with its count."""
    once = (m for messages in per_unit for m, _ in _grouped(messages))   # each unit counts once
    return [f"{m} (in {n} of {len(per_unit)} {unit})" for m, n in _grouped(once)]


def of_run(assembled: dict, pooled: Sequence[dict]) -> list[str]:
    """Every warning of a run, once: the sampler's, then each analysis's, named."""
    return [*assembled["warnings"], *(f"{r['name']}: {w}" for r in pooled for w in r["warnings"])]
