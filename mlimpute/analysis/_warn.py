"""ConvergenceWarnings of the analysis models, attributed to the user's line."""

from __future__ import annotations

import os
import sys
import warnings

from ..errors import ConvergenceWarning

__all__ = ["warn", "warn_fit"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn(message: str) -> None:
    """Emit a ConvergenceWarning pointing at the first frame outside mlimpute."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ConvergenceWarning, stacklevel=level)


def warn_fit(formula: str, converged: bool, singular: bool, message: str, scaled: float) -> None:
    """Warn about a fit that did not converge or sits on the boundary."""
    if not converged and scaled < 0.002:   # lme4's other check: the Hessian
        warn(
            f"model {formula!r} did not converge: the deviance's Hessian is not positive definite at the "
            f"optimum (the Newton-scaled gradient, {scaled:.2g}, is below lme4's tolerance 0.002; optimiser: "
            f"{message}), so some parameter is not identified by these data: a fixed effect that the random "
            "effects duplicate (a cluster-level factor with (1 | cluster)), a binary outcome separated by a "
            "predictor, or a variance at the boundary; simplify the model"
        )
    elif not converged:
        warn(
            f"model {formula!r} did not converge (Newton-scaled gradient {scaled:.2g}, lme4's tolerance 0.002; "
            f"optimiser: {message}); the estimates may be wrong: rescale predictors, simplify the random part "
            "or raise maxiter"
        )
    if singular:
        warn(
            f"boundary (singular) fit for {formula!r}: a random-effect covariance matrix is singular (a variance "
            "estimated as 0 or a correlation of ±1); the model is over-parameterised for these data: consider "
            "simplifying the random part"
        )
