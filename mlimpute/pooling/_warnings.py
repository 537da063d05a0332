"""The warning class of the pooling module."""

from __future__ import annotations

__all__ = ["PoolingWarning"]


class PoolingWarning(UserWarning):
    """A pooled result is valid but needs a careful analyst's attention.

    Raised (as a warning) when the fraction of missing information of a term exceeds 0.5, when
    ``m`` is too small for the chosen multiparameter test (D1, D2), when no complete-data
    degrees of freedom are known, or when a variance component sits on its boundary so no
    interval can be formed. Silence it with
    ``warnings.filterwarnings("ignore", category=mlimpute.PoolingWarning)``.
    """
