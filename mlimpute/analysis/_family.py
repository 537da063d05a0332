"""Response families and links of the GLMM: log-likelihood, IRLS weights and scores from η.

Every quantity is computed from the linear predictor η in log space where it matters, so that
probabilities near 0 or 1 do not overflow (``log_expit``, ``log_ndtr``).

Notes
-----
For observation i, ``w_i = (dμ/dη)² / V(μ)`` (the Fisher information of η, lme4's working
weights) and ``s_i = ∂ log p(y_i | η_i) / ∂η_i = (y − μ)(dμ/dη)/V(μ)``. With canonical links
(logit, log) ``s = y − μ`` and ``w = V(μ)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, log_expit, log_ndtr, ndtri

from ..errors import SpecError

__all__ = ["Family", "get_family"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


@dataclass(frozen=True)
class Family:
    """A (family, link) pair; ``y`` is 0/1 for binomial and a count for Poisson."""

    name: str
    link: str

    def loglik(self, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Per-observation ``log p(y | η)``."""
        if self.link == "logit":
            return log_expit((2 * y - 1) * eta)
        if self.link == "probit":
            return log_ndtr((2 * y - 1) * eta)
        eta = np.minimum(eta, 700.0)
        return y * eta - np.exp(eta) - gammaln(y + 1)

    def evaluate(self, y: np.ndarray, eta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``Σ log p(y | η)``, IRLS weights ``w`` and scores ``s`` in one pass (see the module notes)."""
        if self.link == "logit":
            # one exp: with e = exp(-|η|), log p = min((2y-1)η, 0) - log(1 + e) and
            # μ(1 - μ) = e / (1 + e)²; log(1 + e) is accurate in absolute terms, which is what
            # a sum of log-likelihoods needs
            e = np.exp(-np.abs(eta))
            onep = 1.0 + e
            ll = float(np.minimum((2 * y - 1) * eta, 0.0).sum() - np.log(onep).sum())
            mu = np.where(eta >= 0, 1.0, e) / onep
            return ll, e / (onep * onep), y - mu
        if self.link == "probit":
            log_phi = -0.5 * eta**2 - _LOG_SQRT_2PI
            lp, lq = log_ndtr(eta), log_ndtr(-eta)
            w = np.exp(2 * log_phi - lp - lq)
            s = y * np.exp(log_phi - lp) - (1 - y) * np.exp(log_phi - lq)
            return float((y * lp + (1 - y) * lq).sum()), w, s
        eta = np.minimum(eta, 700.0)
        mu = np.exp(eta)
        return float((y * eta - mu - gammaln(y + 1)).sum()), mu, y - mu

    def start_eta(self, y: np.ndarray) -> np.ndarray:
        """η from R's ``mustart`` (binomial: (y + ½)/2; Poisson: y + 0.1)."""
        if self.name == "binomial":
            mu = (y + 0.5) / 2
            return np.log(mu / (1 - mu)) if self.link == "logit" else ndtri(mu)
        return np.log(y + 0.1)


_LINKS = {"binomial": ("logit", "probit"), "poisson": ("log",)}


def family_label(family: str | None, link: str | None) -> str:
    """``family`` as tables and reports name it: with its link where that is not the canonical
    one (``binomial, probit link``)."""
    family = family or ""
    canonical = _LINKS.get(family, ("identity",))[0]
    return family if not link or link == canonical else f"{family}, {link} link"


def r_family_call(family: object) -> tuple[str, str] | None:
    """R's spelling ``binomial(link = 'probit')`` or ``binomial()`` read as (family, link; ''
    where none is given); None for anything else."""
    m = re.fullmatch(r"\s*(\w+)\s*\(\s*(?:link\s*=\s*)?['\"]?(\w*)['\"]?\s*\)\s*", str(family))
    return (m.group(1), m.group(2)) if m else None


def r_family_hint(family: object) -> str:
    """For R's spelling ``binomial(link = 'probit')``: what to write here ('' for anything else)."""
    if (call := r_family_call(family)) is None:
        return ""
    return f"R's {family} is family={call[0]!r}" + (f", link={call[1]!r}" if call[1] else "") + " here"


def get_family(family: str, link: str | None) -> Family:
    """Validate a family/link pair; ``link=None`` takes the canonical link."""
    if family not in _LINKS:
        hint = r_family_hint(family)
        raise SpecError(f"family={family!r} is not supported; "
                        + (hint if hint else "use 'binomial' (0/1 outcomes) or 'poisson' (counts)"))
    link = _LINKS[family][0] if link is None else link
    if link not in _LINKS[family]:
        raise SpecError(f"link={link!r} is not available for family={family!r}; use one of {', '.join(map(repr, _LINKS[family]))}")
    return Family(name=family, link=link)
