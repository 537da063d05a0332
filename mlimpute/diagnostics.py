"""Convergence diagnostics: rank-normalised split R-hat, bulk and tail ESS, autocorrelation.

References
----------
Vehtari, A., Gelman, A., Simpson, D., Carpenter, B., & Bürkner, P.-C. (2021). Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC. Bayesian
Analysis, 16(2), 667-718.
Geyer, C. J. (1992). Practical Markov chain Monte Carlo. Statistical Science, 7(4), 473-483.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import rankdata

from .errors import ConvergenceWarning, PriorWarning

__all__ = ["rhat", "ess_bulk", "ess_tail", "autocorrelation", "summarise", "warn_convergence", "warn_prior",
           "RHAT_LIMIT", "ESS_LIMIT", "MIN_DRAWS"]

RHAT_LIMIT = 1.05
ESS_LIMIT = 100
MIN_DRAWS = 4  # split chains need two halves of at least two draws
PRIOR_MIN_DRAWS = 20  # fewer draws in all chains: the prior's share is not read
PRIOR_SHARE = 0.2  # the prior's share of a variance's posterior mean above which: PriorWarning (docs/sampler-quality.md)
PRIOR_PULL = 0.5   # or: the posterior mean more than 1/(1 − 0.5) = 2 times the variance the units' data say


def _split(x: np.ndarray) -> np.ndarray:
    """(chains, draws) → (2·chains, draws//2): the first and second half of every chain."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise: normal scores of the pooled ranks (average ranks for ties)."""
    r = rankdata(x, axis=None).reshape(x.shape)
    return ndtri((r - 0.375) / (x.size + 0.25))


def _rhat_basic(x: np.ndarray) -> float:
    n = x.shape[1]
    within = np.mean(np.var(x, axis=1, ddof=1))
    if not np.isfinite(within) or within <= 0:
        return np.nan
    between = n * np.var(np.mean(x, axis=1), ddof=1)
    return float(np.sqrt((between / within + n - 1) / n))


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Autocorrelation of each chain along the last axis (FFT, biased estimator as in Stan)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    xc = x - x.mean(axis=-1, keepdims=True)
    m = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(xc, n=m, axis=-1)
    acov = np.fft.irfft(f * np.conj(f), n=m, axis=-1)[..., :n] / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov / acov[..., :1]


def _ess_basic(x: np.ndarray) -> float:
    """Effective sample size of (chains, draws) with Geyer's initial monotone sequence."""
    m, n = x.shape
    if n < 4 or not np.all(np.isfinite(x)):
        return np.nan
    xc = x - x.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(xc, n=size, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n
    mean_var = np.mean(acov[:, 0]) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus += np.var(np.mean(x, axis=1), ddof=1)
    if var_plus <= 0:
        return np.nan
    rho = 1.0 - (mean_var - np.mean(acov, axis=0)) / var_plus
    rho[0] = 1.0
    rho_t = np.zeros(n)
    rho_t[0] = 1.0
    rho_t[1] = rho[1]
    even, odd = 1.0, rho[1]
    t = 1
    while t < n - 3 and even + odd > 0.0:
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0:
            rho_t[t + 1], rho_t[t + 2] = even, odd
        t += 2
    max_t = t - 2
    if even > 0:
        rho_t[max_t + 1] = even
    t = 1
    while t <= max_t - 2:  # initial monotone sequence
        if rho_t[t + 1] + rho_t[t + 2] > rho_t[t - 1] + rho_t[t]:
            rho_t[t + 1] = rho_t[t + 2] = (rho_t[t - 1] + rho_t[t]) / 2.0
        t += 2
    total = m * n
    tau = -1.0 + 2.0 * np.sum(rho_t[: max_t + 1]) + np.sum(rho_t[max_t + 1: max_t + 2])
    tau = max(tau, 1.0 / np.log10(total))
    return float(total / tau)


def _nan_reduce(fn, values: list[float]) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(fn(values)) if values else np.nan


def rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat: the max of the bulk and the folded (tail) versions."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    if np.ptp(x) == 0:
        return np.nan
    s = _split(x)
    bulk = _rhat_basic(_z_scale(s))
    tail = _rhat_basic(_z_scale(np.abs(s - np.median(s))))
    return _nan_reduce(np.nanmax, [bulk, tail])


def ess_bulk(x: np.ndarray) -> float:
    x = np.atleast_2d(np.asarray(x, dtype=float))
    if np.ptp(x) == 0:
        return np.nan
    return _ess_basic(_z_scale(_split(x)))


def ess_tail(x: np.ndarray) -> float:
    """Minimum of the ESS of the indicators I(x ≤ q05) and I(x ≤ q95)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    if np.ptp(x) == 0:
        return np.nan
    s = _split(x)
    q05, q95 = np.quantile(x, [0.05, 0.95])  # quantiles of all draws, as Vehtari et al.
    return _nan_reduce(np.nanmin, [_ess_basic((s <= q05).astype(float)), _ess_basic((s <= q95).astype(float))])


def summarise(draws: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Diagnostics table from draws of shape (chains, draws, parameters)."""
    rows = []
    if draws.shape[1] < 4:  # split halves of < 2 draws: nothing to estimate
        return pd.DataFrame({"parameter": list(names), "rhat": np.nan, "ess_bulk": np.nan,
                             "ess_tail": np.nan})
    for k, name in enumerate(names):
        x = draws[:, :, k]
        rows.append((name, rhat(x), ess_bulk(x), ess_tail(x)))
    return pd.DataFrame(rows, columns=["parameter", "rhat", "ess_bulk", "ess_tail"])


def warn_convergence(table: pd.DataFrame, n_draws: int, stacklevel: int = 2) -> None:
    """A :class:`~mlimpute.ConvergenceWarning` when a parameter of ``table`` (``summarise``'s)
    has R-hat > RHAT_LIMIT or bulk/tail ESS < ESS_LIMIT, naming the worst; or when there are
    too few draws to tell."""
    if n_draws < MIN_DRAWS:
        warnings.warn(
            f"only {n_draws} post-burn-in draws per chain: too few to assess convergence "
            f"(R-hat and ESS need at least {MIN_DRAWS}); increase between or n_imputations",
            ConvergenceWarning, stacklevel=stacklevel + 1,
        )
        return
    names = table["parameter"].to_numpy()
    r = table["rhat"].to_numpy(dtype=float)
    ess = np.fmin(table["ess_bulk"].to_numpy(dtype=float), table["ess_tail"].to_numpy(dtype=float))
    parts = []
    bad_r = np.flatnonzero(r > RHAT_LIMIT)
    if bad_r.size:
        bad_r = bad_r[np.argsort(-r[bad_r])]
        worst = ", ".join(f"{names[i]} ({r[i]:.3f})" for i in bad_r[:3])
        parts.append(f"R-hat > {RHAT_LIMIT} for {bad_r.size} parameter(s), worst: {worst}")
    bad_e = np.flatnonzero(ess < ESS_LIMIT)
    if bad_e.size:
        bad_e = bad_e[np.argsort(ess[bad_e])]
        worst = ", ".join(f"{names[i]} ({ess[i]:.0f})" for i in bad_e[:3])
        parts.append(f"ESS < {ESS_LIMIT} for {bad_e.size} parameter(s), worst: {worst}")
    if parts:
        warnings.warn(
            "; ".join(parts) + ". Increase burn and between (or imputations/chains), and look "
            "at these parameters' traces (res.trace(); the pipeline's report.html draws them)",
            ConvergenceWarning, stacklevel=stacklevel + 1,
        )


def _toml_key(name: str) -> str:
    """A TOML key: bare if it can be, else quoted (a membership's 'mm(s1, s2)')."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('\\', '\\\\').replace('"', '\\"') + '"'


def warn_prior(draws: np.ndarray, names, affine, priors, stacklevel: int = 2) -> list[tuple[str, float]]:
    """A :class:`~mlimpute.PriorWarning` naming the random-effect variances whose posterior mean
    is mostly their inverse-Wishart prior's scale; returns (name, share) of each.

    Given the effects u of J units, Ω | u ~ IW(ν + J, Ψ + S) with S = Σ u u', so the posterior
    mean of a variance is E[Ω_kk] = (Ψ_kk + E[S_kk]) / (ν + J − d − 1), read off the draws (on
    the sampler's scale, where Ψ is: ``affine`` maps the monitored values back). E[S_kk] holds,
    besides what the data say, the effects' own posterior spread, Σ_j V_jk, which a larger Ω lets
    grow (with small units it is most of S, and the prior's pull hides in it); for a level-1
    variable's effect it is taken out, V_jk ≈ 1/(1/Ω_kk + I_jk/σ²) with I_jk the unit's
    information (``VariancePrior.info``) and σ² the variable's level-1 variance (correlations
    between variables ignored). The prior's share is then Ψ_kk / (E[Ω_kk](ν + J − d − 1) − Σ_j
    V_jk), at most 1. That reading misses the prior's pull through the spread itself (V_jk grows
    with Ω: with many small units a prior-inflated Ω keeps itself up through S), so for those
    effects a second reading is taken: the variance T the units' data say (``_moment_variance``,
    solved from E[S_kk] with each effect's posterior mean r_j ȳ_j and E[ȳ_j²] = T + σ²/I_jk),
    and the pull 1 − T / E[Ω_kk]. It is noisier (a difference of like quantities: on the
    validation grid above 0.2 in a fifth of the runs of cells without excess), so it warns
    above ``PRIOR_PULL`` (a posterior mean more than twice T), and then counts as the share;
    the message gives T (on the data's scale) beside the posterior mean (not for a nested
    classification's variable, ``VariancePrior.share_only``). It is a warning about
    sensitivity to the prior, not a measure of bias (``benchmarks/prior_warning_check.py``
    measures both on the validation grid). Only variables
    with missing values are checked, and the substantive model's covariance blocks
    (``sampler.variance_priors``, ``sampler.sweep.substantive_priors``). ``draws``: (chains, draws,
    parameters). Priors the user stated are not checked, nor runs with fewer than
    ``PRIOR_MIN_DRAWS`` draws in all."""
    if draws.shape[0] * draws.shape[1] < PRIOR_MIN_DRAWS:   # a posterior mean from a handful of draws says little
        return []
    index = {n: k for k, n in enumerate(names)}
    mean = draws.reshape(-1, draws.shape[-1]).mean(axis=0)

    def internal(name: str) -> float | None:
        j = index.get(name)
        if j is None:
            return None
        return float(mean[j] / (affine[1][j] if affine is not None else 1.0))

    found = []
    for vp in priors:
        if vp.stated:   # the user's own choice of prior: not second-guessed
            continue
        denom = vp.df + vp.units - vp.dim - 1
        for k, name in enumerate(vp.names):
            omega = internal(name) if name is not None else None
            if omega is None or denom <= 0 or not omega > 0:
                continue
            spread, data_says = 0.0, None
            if vp.info and vp.info[k] is not None and vp.level1[k] is not None:
                sigma2 = internal(vp.level1[k])
                sigma2 = 1.0 if sigma2 is None else sigma2   # not monitored: a categorical latent's, fixed at 1
                if sigma2 > 0:
                    info = np.asarray(vp.info[k], float) / sigma2
                    if vp.inner and vp.inner[k] is not None:   # through the inner units' effects
                        tau2_name, up, counts = vp.inner[k]
                        tau2 = internal(tau2_name)
                        if tau2 is not None and tau2 > 0:
                            info = np.bincount(up, weights=counts / (sigma2 + counts * tau2), minlength=vp.units)
                    spread = float(np.sum(omega / (omega * info + 1.0)))
                    if not (vp.share_only and vp.share_only[k]):
                        data_says = _moment_variance(omega, omega * denom - vp.psi[k], info, spread)
            share = float(vp.psi[k] / max(omega * denom - spread, vp.psi[k]))
            pulled = False
            if data_says is not None:   # the prior's pull through the effects' spread (their posterior
                pull = float(1.0 - max(data_says, 0.0) / omega)   # shrinks less as Ω grows)
                pulled = pull > PRIOR_PULL
                share = max(share, pull) if pulled else share
            if share > PRIOR_SHARE or pulled:
                scale = affine[1][index[name]] if affine is not None else 1.0
                said = None if data_says is None else max(data_says, 0.0) * scale
                found.append((share, name, float(mean[index[name]]), vp, said))
    if found:
        found.sort(key=lambda t: -t[0])
        worst = ", ".join(f"{name} = {value:.3g} (about {share:.0%} from the prior"
                          + ("" if said is None else f"; the data alone say about {said:.2g}") + ")"
                          for share, name, value, _, said in found[:3])
        matrices = list({vp.matrix: vp for _, _, _, vp, _ in found}.values())   # each covariance once, worst first
        wheres = []
        if any(vp.matrix == "omega2" for vp in matrices):
            wheres.append("prior_l2=mi.CovariancePrior(scale=...) ([model.prior_l2] in a TOML config)")
        if names := [vp.matrix[len("omega["):-1] for vp in matrices if vp.matrix.startswith("omega[")]:
            wheres.append("priors={" + ", ".join(f"{n!r}: mi.CovariancePrior(scale=...)" for n in names) + "} ("
                          + ", ".join(f"[model.priors.{_toml_key(n)}]" for n in names) + " in a TOML config)")
        if any(vp.matrix == "substantive" for vp in matrices):
            default = ", ".join(f"{n[n.index('[') + 1:n.index(',')]} {p:.3g}" for vp in priors if vp.matrix == "substantive"
                                for n, p in zip(vp.names, vp.psi))
            wheres.append("prior_substantive=mi.CovariancePrior(scale=...) ([model.prior_substantive] in a TOML "
                          "config; one q × q scale, q the formula's random effects, block-diagonal by term; "
                          f"the default's diagonal, in that order: {default})")
        fix = (f"state {' and '.join(wheres)} with a smaller diagonal for these, on the data's scale (about a "
               "tenth of the variance you expect), and compare the results")
        whose = ("of the substantive model" if all(vp.matrix == "substantive" for vp in matrices) else
                 "of incomplete variables" if all(vp.matrix != "substantive" for vp in matrices) else
                 "of incomplete variables and the substantive model")
        warnings.warn(
            f"the default inverse-Wishart prior holds up the posterior mean of {len(found)} random-effect "
            f"variance(s) {whose} (its scale more than {PRIOR_SHARE:.0%} of it beside what the data say, or "
            f"the mean more than {1 / (1 - PRIOR_PULL):.0f} times the variance the units' data say), worst: {worst}: the data "
            f"({', '.join(str(vp.units) for vp in matrices)} units) say little about a variance of this "
            "size, so the prior can hold it up, "
            "and the imputations then vary more between units than the data do; " + fix,
            PriorWarning, stacklevel=stacklevel + 1,
        )
    return [(name, share) for share, name, _, _, _ in found]


def _moment_variance(omega: float, s_mean: float, info: np.ndarray, spread: float) -> float:
    """The variance the units' data say, T, read off E[S_kk] (``s_mean``) at the posterior mean
    Ω = ``omega``: each unit's effect has, given its data, mean r_j ȳ_j and variance V_j with
    r_j = Ω I_j / (Ω I_j + 1), V_j = Ω / (Ω I_j + 1) (I_j its information per unit of the
    level-1 variance; ``spread`` = Σ_j V_j), and E[ȳ_j²] = T + 1/I_j, so E[S_kk] = Σ_j r_j²
    (T + 1/I_j) + Σ_j V_j; T solves it (the fixed point of the effects' EM update at T is T
    itself). Without units that carry information: 0 (the data say nothing)."""
    r = omega * info / (omega * info + 1.0)
    rr = float(np.sum(r * r))
    if not rr > 0:
        return 0.0
    return (s_mean - spread - float(np.sum(omega * r / (omega * info + 1.0)))) / rr
