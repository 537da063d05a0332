"""mlimpute: multilevel multiple imputation with a joint latent-normal model, plus analysis
and pooling of the completed datasets.

Public API (every name in ``__all__``; README "In Python")::

    import mlimpute as mi
    model = mi.ImputationModel(cluster="school", variables={...}, covariates=[...])
    res = mi.impute(df, model, n_imputations=20, burn=1000, between=100, chains=4, seed=1)
"""

from .analysis import glmm, lmm
from .errors import ConvergenceError, ConvergenceWarning, DataError, MlimputeError, PriorWarning, SpecError
from .impute import impute
from .result import ImputationResult
from .pooling import ModelTestResult, PooledResult, PoolingWarning, analyse, pool, test_models
from .spec import CovariancePrior, Crossed, ImputationModel, Membership, Variable



def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlimpute")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


__version__ = _installed_version()
del _installed_version

__all__ = [
    "__version__",
    # errors
    "MlimputeError",
    "SpecError",
    "DataError",
    "ConvergenceError",
    "ConvergenceWarning",
    "PriorWarning",
    "lmm",
    "glmm",
    # specification
    "ImputationModel",
    "Variable",
    "CovariancePrior",
    "Crossed",
    "Membership",
    # imputation
    "impute",
    "ImputationResult",
    # pooling
    "pool",
    "test_models",
    "analyse",
    "PooledResult",
    "ModelTestResult",
    "PoolingWarning",
]
