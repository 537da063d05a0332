"""``impute()``: chains, burn-in, thinning and seeding (the result: ``mlimpute.result``).

The work is split so that a task runner can run chains anywhere: :func:`prepare` checks the
data and builds the arrays, :func:`run_chain` runs one chain from its own ``SeedSequence``
child, and :func:`assemble` turns the chains into an :class:`ImputationResult`. ``impute()``
simply calls the three in sequence; the Prefect flow runs the chains as separate tasks and
gets the same imputations for the same seed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from . import diagnostics as diag
from .design import ModelData, build, long_table, missing_units
from .errors import DataError, SpecError
from .result import ImputationResult
from .scaling import standardize, unscale_values
from .sampler import initial_state, prepare_static, sweep, trace_names, trace_vector, variance_priors
from .sampler.latent import latents_to_codes
from .sampler.outcome import impute_outcome
from .sampler.outcome_multi import impute_general_outcome
from .spec import ImputationModel

__all__ = ["impute", "prepare", "run_chain", "assemble", "ImputationResult", "ChainResult",
           "chain_seeds", "split_imputations"]



# --------------------------------------------------------------------------------------------
# Seeding and splitting
# --------------------------------------------------------------------------------------------
def chain_seeds(
    seed: int | np.random.SeedSequence | np.random.Generator | None, chains: int
) -> tuple[int | tuple[int, ...], list[np.random.SeedSequence]]:
    """Root entropy and one ``SeedSequence`` per chain (SPEC 7).

    The entropy is what a user records to reproduce a run: ``impute(..., seed=entropy)``
    re-creates the same streams.
    """
    if isinstance(seed, np.random.Generator):
        seq = seed.bit_generator.seed_seq
        if not isinstance(seq, np.random.SeedSequence):
            seq = np.random.SeedSequence(seed.integers(2**63))
    elif isinstance(seed, np.random.SeedSequence):
        seq = seed
    elif seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        if seed is not None and seed < 0:
            raise SpecError(f"seed={seed!r} must be a non-negative integer (numpy's SeedSequence)")
        seq = np.random.SeedSequence(None if seed is None else int(seed))
    else:
        raise SpecError(f"seed must be an int, a numpy Generator/SeedSequence or None, got {seed!r}")
    return seq.entropy, seq.spawn(chains)


def split_imputations(n_imputations: int, chains: int) -> list[int]:
    """Imputations per chain: as even as possible, the first chains taking the remainder."""
    base, extra = divmod(n_imputations, chains)
    return [base + (c < extra) for c in range(chains)]


def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# One chain
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChainResult:
    """Output of one chain: the imputed values at each imputation and the parameter trace.

    ``imputed[name]`` is (M_c, n_missing) for each variable with missing values: the values
    (continuous) or category codes (categorical) at its missing rows (level 1, sorted order) or
    clusters (level 2), as listed by :func:`missing_units`. ``trace`` is (draws, parameters):
    every sweep after burn-in.
    """

    chain: int
    imputed: dict[str, np.ndarray]
    trace: np.ndarray
    seconds: float

    @property
    def n_imputations(self) -> int:
        return next(iter(self.imputed.values())).shape[0] if self.imputed else self.trace.shape[0]


class _Progress:
    """A one-line progress report on stderr, only when attached to a terminal."""

    def __init__(self, enabled: bool | None, total: int, label: str):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.label = total, label
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.25 and done < self.total:
            return
        self.last = now
        rate = (now - self.t0) / max(done, 1) * 1e3
        width = 30
        fill = int(width * done / self.total)
        sys.stderr.write(
            f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} sweeps "
            f"{rate:.2f} ms/sweep"
        )
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_chain(
    data: ModelData,
    chain: int,
    n_imputations: int,
    burn: int,
    between: int,
    seed: np.random.SeedSequence,
    progress: bool | None = None,
    on_sweep: Callable[[int, int], None] | None = None,
) -> ChainResult:
    """Run one chain: ``burn`` sweeps, then an imputation every ``between`` sweeps.

    ``on_sweep(done, total)``, if given, is called after every sweep (the pipeline's progress
    bars; it must be cheap).

    BLAS is pinned to one thread for the chain: the sampler's products are skinny, and two BLAS
    threads made them up to 30x slower on a 2-core machine.
    """
    t0 = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(seed))
    st = prepare_static(data)
    total = burn + n_imputations * between
    bar = _Progress(progress if total >= 2000 or progress else False, total, f"chain {chain + 1}")
    units = missing_units(data)
    imputed = {
        c.name: np.empty((n_imputations, units[c.name].size), dtype=float if c.kind == "continuous" else np.int64)
        for c in data.output_codecs if units[c.name].size
    }
    n_par = len(trace_names(data))
    trace = np.empty((n_imputations * between, n_par))
    work: dict = {}  # scratch buffers reused across sweeps (not state)
    with threadpool_limits(limits=1, user_api="blas"):
        state = initial_state(st, rng)
        for it in range(total):
            state = sweep(rng, st, state, adapt_at=it if it < burn else None, work=work)
            k = it - burn
            if k >= 0:
                trace[k] = trace_vector(st, state)
                if (k + 1) % between == 0:
                    m = (k + 1) // between - 1
                    for name, values in _current_imputations(rng, st, state, units).items():
                        imputed[name][m] = values
            bar.update(it + 1)
            if on_sweep is not None:
                on_sweep(it + 1, total)
    return ChainResult(chain=chain, imputed=imputed, trace=trace, seconds=time.perf_counter() - t0)


def _completed(st, state) -> tuple[dict, dict]:
    """The completed (latent) arrays by level (1, 2 or a classification's name) and the
    ordinal thresholds by variable, of either sampler's state."""
    data = st.data
    if data.classes:
        arrays = {1: state.y1, **{cd.name: y for cd, y in zip(data.classes, state.ys)}}
        ords = [c for c in data.categorical1 if c.kind == "ordinal"]
        cuts = list(state.cuts1)
        for cd, cc in zip(data.classes, state.cuts):
            ords += [c for c in cd.codecs if c.kind == "ordinal"]
            cuts += list(cc)
        return arrays, {c.name: k for c, k in zip(ords, cuts)}
    ordinal = {c.name: cuts for c, cuts in zip((*st.ordinal1, *st.ordinal2), (*state.cuts1, *state.cuts2))}
    return {1: state.y1, 2: state.y2}, ordinal


def _current_imputations(rng, st, state, units: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The imputed values/categories of the current state at every variable's missing units
    (the outcome of a substantive model drawn from it now)."""
    out = {}
    arrays, ordinal = _completed(st, state)
    if getattr(st, "outcome", None) is not None and units[st.data.outcome.name].size:
        if st.data.classes:   # the general sampler's component
            out[st.data.outcome.name] = impute_general_outcome(rng, st.outcome, state.outcome, st.data, state.y1,
                                                               state.ys, ordinal)
        else:
            out[st.data.outcome.name] = impute_outcome(rng, st.outcome, state.outcome, st.data, state.y1,
                                                       state.y2, ordinal)
    for c in st.data.codecs:
        rows = units[c.name]
        if not rows.size:
            continue
        y = arrays[c.level]
        if c.kind == "continuous":
            out[c.name] = unscale_values(st.data, c, y[rows, c.cols[0]])
        else:
            out[c.name] = latents_to_codes(c, y[rows][:, list(c.cols)], ordinal.get(c.name))
    return out


def prepare(df: pd.DataFrame, model: ImputationModel) -> ModelData:
    """Validate ``df`` against ``model`` and build the sampler's arrays (no sampling)."""
    if not isinstance(model, ImputationModel):
        raise SpecError(f"model must be an mlimpute.ImputationModel, got {type(model).__name__}")
    if isinstance(df, pd.DataFrame) and "imputation" in df.columns:
        raise DataError(
            "the data already has a column named 'imputation', which the output uses for the "
            "imputation number; rename it"
        )
    return standardize(build(df, model))


def _affine(data: ModelData):
    from .sampler.multi import multi_trace_affine
    from .sampler.state import trace_affine

    return multi_trace_affine(data) if data.classes else trace_affine(data)


def assemble(
    df: pd.DataFrame,
    data: ModelData,
    chains: list[ChainResult],
    *,
    burn: int,
    between: int,
    seed_entropy: object,
    warn: bool = True,
) -> ImputationResult:
    """Combine chain outputs (in chain order) into an :class:`ImputationResult`."""
    chains = sorted(chains, key=lambda c: c.chain)
    names = trace_names(data)
    n = min(c.trace.shape[0] for c in chains)
    draws = np.stack([c.trace[:n] for c in chains])
    table = diag.summarise(draws, names)
    if warn:
        diag.warn_convergence(table, n, stacklevel=3)
        diag.warn_prior(draws, names, _affine(data), variance_priors(data), stacklevel=3)
    m = sum(c.n_imputations for c in chains)
    imputed = {name: np.concatenate([c.imputed[name] for c in chains], axis=0)
               for name in chains[0].imputed}
    return ImputationResult(
        data=long_table(df, data, imputed, m), model=data.model,
        n_imputations=sum(c.n_imputations for c in chains), burn=burn, between=between,
        chains=len(chains), seed_entropy=seed_entropy, parameter_names=names,
        traces=[c.trace for c in chains], chain_seconds=[c.seconds for c in chains],
        index=df.index, _diagnostics=table,
    )


def impute(
    data: pd.DataFrame,
    model: ImputationModel,
    n_imputations: int = 5,
    burn: int = 1000,
    between: int = 100,
    chains: int = 2,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    progress: bool | None = None,
) -> ImputationResult:
    """Multiply impute the missing values of ``data`` under the joint multilevel model.

    Parameters
    ----------
    data : DataFrame
        One row per level-1 unit, with the cluster id, the variables and the covariates.
    model : ImputationModel
    n_imputations : int
        Number of completed datasets M, split as evenly as possible over the chains.
    burn : int
        Sweeps discarded at the start of every chain.
    between : int
        Sweeps between successive imputations of a chain (the first is taken ``between``
        sweeps after burn-in).
    chains : int
        Independent chains (each from its own ``SeedSequence`` child and its own dispersed
        starting values); diagnostics use all of them. Must not exceed ``n_imputations``.
    seed : int, SeedSequence, Generator or None
        One seed for the whole run; the same seed gives the same imputations.
    progress : bool, optional
        Show a progress line on stderr; default: only on a terminal and for long runs.

    Returns
    -------
    ImputationResult

    Warns
    -----
    ConvergenceWarning
        When a monitored parameter has R-hat > 1.05 or bulk/tail ESS < 100, naming the worst.

    Notes
    -----
    The sampler (``mlimpute.sampler``; ``docs/sampler-quality.md`` lists its moves and why) works
    under model (6) of Goldstein, Carpenter & Browne, on internally standardised variables
    (``standardize``): each sweep draws the categorical latents and ordinal thresholds, the
    fixed effects and all clusters' random effects as one exact block (B with the effects
    integrated out, then the effects), Ω2 and Ω1 (inverse-Wishart; Metropolis–Hastings on the
    elements that categorical latents constrain), and the missing cells, with scale moves of
    the random effects and the latents and collapsed moves of rare categories' columns in
    between; several classifications, variance functions and a substantive model add their
    own steps. Priors: flat on B (or ``categorical_prior_sd``), inverse-Wishart on Ω1, Ω2
    (``prior_l1``, ``prior_l2``).

    References
    ----------
    Carpenter, J. R., & Kenward, M. G. (2013). Multiple Imputation and its Application. Wiley.
    Goldstein, H., Carpenter, J., Kenward, M. G., & Levin, K. A. (2009). Multilevel models
    with multivariate mixed response types. Statistical Modelling, 9(3), 173-197.
    """
    n_imputations = _check_positive_int(n_imputations, "n_imputations")
    burn = _check_positive_int(burn, "burn")
    between = _check_positive_int(between, "between")
    chains = _check_positive_int(chains, "chains")
    if chains > n_imputations:
        raise SpecError(
            f"chains={chains} exceeds n_imputations={n_imputations}: every chain must give at "
            "least one imputation; use fewer chains or more imputations"
        )
    prepared = prepare(data, model)
    entropy, seeds = chain_seeds(seed, chains)
    per_chain = split_imputations(n_imputations, chains)
    results = [
        run_chain(prepared, c, per_chain[c], burn, between, seeds[c], progress)
        for c in range(chains)
    ]
    return assemble(data, prepared, results, burn=burn, between=between, seed_entropy=entropy)
