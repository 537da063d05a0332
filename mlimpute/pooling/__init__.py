"""Pooling the analyses of multiply imputed data.

* :func:`pool` — Rubin's rules with Barnard–Rubin df, RIV and FMI as mitml defines them, plus
  variance components and ICCs pooled on a transformed scale with intervals;
* :func:`test_models` — multiparameter tests D1, D2, D3 (mitml's ``testModels``);
* :func:`analyse` — fit a model on every imputed dataset (an ``ImputationResult`` or any long
  table with an imputation column) and pool.

Modules: ``_rubin`` (scalar rules, array code), ``_extract`` (inputs → arrays), ``_varcomp``
(variance components), ``_pool``, ``_modeltests``, ``_analyse``, ``_result`` (result objects).
"""

from __future__ import annotations

from ._analyse import analyse
from ._modeltests import test_models
from ._pool import pool
from ._result import ModelTestResult, PooledResult
from ._warnings import PoolingWarning

__all__ = ["pool", "test_models", "analyse", "PooledResult", "ModelTestResult", "PoolingWarning"]

# pytest would collect a module-level name starting with "test_" if a test module did
# ``from mlimpute.pooling import test_models``; mark it as not a test.
test_models.__test__ = False  # type: ignore[attr-defined]
