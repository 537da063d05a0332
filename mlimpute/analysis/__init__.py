"""Substantive multilevel models for completed data: LMMs (ML/REML) and GLMMs, lme4-style formulas."""

from .glmm import glmm
from .lmm import lmm
from .result import MixedResult

__all__ = ["lmm", "glmm", "MixedResult"]
