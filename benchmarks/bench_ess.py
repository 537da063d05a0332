"""Mixing speed: bulk and tail ESS per 1,000 sweeps and per second for every parameter class,
ours vs jomo (``jomo.MCMCchain``'s collected draws), same data, same run.

    python benchmarks/bench_ess.py                        # 250 clusters x 16, 2,000 sweeps
    python benchmarks/bench_ess.py --sizes 100x10 --sweeps 500 --no-r
    python benchmarks/bench_ess.py --no-r --off expansion   # what a move buys: the same run without it
    python benchmarks/bench_ess.py --data jsp --sweeps 10000   # JSPmiss, fluent nominal
    python benchmarks/bench_ess.py --data jsp --jomo-lib /tmp/jomo_unclamped   # jomo without its clamp
    python benchmarks/bench_ess.py --data level2 --sizes 200x10 --compare --standardize no --jomo-lib LIB

jomo keeps a nominal latent's draw inside (-3, 4); where a category is rare that changes its
posterior (on JSPmiss the level-2 variances of fluent's latents sit at 0.08 instead of about 0.5)
and the mixing with it. ``benchmarks/r/build_jomo_unclamped.sh`` builds jomo without the clamp
into a private library for ``--jomo-lib``.

Data (``--data``): ``mixed`` (default) is ``bench_sampler.simulate(J, n, "mixed")``: y1, y2
continuous, b binary, f 3-category nominal at level 1, w continuous at level 2, covariate x, 20%
of every variable missing. ``jsp`` is JSPmiss (``data/JSPmiss.csv``, jomo's example: 1,119 pupils
in 47 schools): ravens, english continuous and fluent nominal (3 categories, two of them 3 % of
the values) given sex and behaviour, clustered by school (jomo has no ordinal model, so fluent is
nominal for both). ``level2``: ``--sizes JxN`` schools of N pupils, y continuous given x, a
rare binary wb (about 6 % ones) and a continuous w per school, 20 % of each missing (the
collapsed block at level 2); ``level2-continuous`` the same data without wb (where jomo draws Ω2
from the inverse-Wishart, as we do). Both samplers run one chain of ``--burn`` then ``--sweeps`` iterations; ESS (rank-normalised bulk and
tail, ``mlimpute.diagnostics``, the same function for both) of every monitored parameter of
the draws after burn-in, grouped into classes: fixed effects, level-1 covariances among
continuous variables, between a categorical latent and a continuous variable, between two
categorical latents, level-2 covariances. Elements fixed by the model (latent variances) are
left out. Seconds: process CPU time of ours (BLAS on one thread) and R's elapsed time of the
jomo call (it is single-threaded), each for burn-in plus the draws, so ESS/s compares what a
user waits for. The per-class line gives the smallest ESS of the class (the one that decides
how long to run).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sampler as bs  # noqa: E402
from _moves import add_off_option, switch_off  # noqa: E402

JSP = Path(__file__).resolve().parent / "data" / "JSPmiss.csv"


@dataclass(frozen=True)
class Design:
    """A data set, our model of it, its categorical variables and the jomo call's data frames."""
    df: pd.DataFrame
    model: object
    categorical: tuple[str, ...]
    r_frames: str          # R code defining Y, Y2 (or NULL), X and clus from the data frame d
    covariates: dict       # our names of the covariates' columns -> jomo's (X's columns)


def design(name: str, J: int, n: int, seed: int) -> Design:
    import mlimpute as mi

    if name == "mixed":
        return Design(bs.simulate(J, n, "mixed", seed=seed), bs._model("mixed"), ("b", "f"),
                      "Y <- data.frame(y1 = d$y1, y2 = d$y2, b = factor(d$b), f = factor(d$f))\n"
                      "Y2 <- data.frame(w = d$w); X <- data.frame(cons = 1, x = d$x); clus <- d$g",
                      {"Intercept": "cons", "x": "x"})
    if name == "jsp":
        df = pd.read_csv(JSP)
        model = mi.ImputationModel(cluster="school", covariates=["sex", "behaviour"],
                                   variables={"ravens": "continuous", "english": "continuous",
                                              "fluent": "nominal"})
        return Design(df, model, ("fluent",),
                      "Y <- data.frame(ravens = d$ravens, english = d$english, fluent = factor(d$fluent))\n"
                      "Y2 <- NULL; X <- data.frame(cons = 1, sex = d$sex, upper = as.numeric(d$behaviour == 'upper'))\n"
                      "clus <- d$school", {"Intercept": "cons", "sex": "sex", "behaviour[T.upper]": "upper"})
    if name in ("level2", "level2-continuous"):
        # level2-continuous: the same data without wb (jomo then draws Ω2 from the inverse-Wishart)
        wb = name == "level2"
        df = _level2_data(J or 200, n or 10, seed)
        model = mi.ImputationModel(cluster="g", covariates=["x"], variables={
            "y": "continuous", **({"wb": mi.Variable("binary", level=2)} if wb else {}),
            "w": mi.Variable("continuous", level=2)})
        return Design(df if wb else df.drop(columns="wb"), model, ("wb",) if wb else (),
                      "Y <- data.frame(y = d$y); Y2 <- data.frame("
                      + ("wb = factor(d$wb), " if wb else "") + "w = d$w)\n"
                      "X <- data.frame(cons = 1, x = d$x); clus <- d$g", {"Intercept": "cons", "x": "x"})
    raise ValueError(f"--data {name!r}: use 'mixed', 'jsp', 'level2' or 'level2-continuous'")


def _level2_data(J: int, n: int, seed: int) -> pd.DataFrame:
    """n pupils (y continuous, covariate x) in each of J schools with a rare binary wb (about 6 %
    ones) and a continuous w per school; 20 % of y and of the schools' wb and w missing."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(1, J + 1), n)
    u = rng.normal(0, 0.6, J)
    x = rng.normal(size=J * n)
    wb = (-1.4 + 0.8 * u + 0.6 * rng.normal(size=J) > 0).astype(float)
    df = pd.DataFrame({"g": g, "x": x, "y": 1 + 0.5 * x + u[g - 1] + rng.normal(size=J * n),
                       "wb": wb[g - 1], "w": (0.5 * u + rng.normal(size=J))[g - 1]})
    df.loc[rng.random(J * n) < 0.2, "y"] = np.nan
    for c in ("wb", "w"):
        df.loc[(rng.random(J) < 0.2)[g - 1], c] = np.nan
    return df


def _cls(level: str, a: str, b: str | None, categorical: tuple[str, ...]) -> str:
    if level == "beta":
        return "fixed effects"
    if level == "2":
        return "level-2 covariances"
    cats = sum(any(x == c or x.startswith(c + "[") or x.startswith(c + ".") for c in categorical) for x in (a, b))
    return ["level-1 cov, continuous", "level-1 cov, categorical x continuous",
            "level-1 cov, categorical x categorical"][cats]


def classify(name: str, categorical: tuple[str, ...], jomo: bool = False) -> str:
    if name.startswith("beta"):
        return _cls("beta", name, None, categorical)
    m = re.match(r"omega(\d)\[(.+),(.+)\]$", name)
    a, b = (m.group(2).replace("*Z1", ""), m.group(3).replace("*Z1", "")) if jomo else (m.group(2), m.group(3))
    return _cls(m.group(1), a, b, categorical)


def common_key(name: str, d: Design, jomo: bool) -> tuple:
    """A monitored parameter's name, ours or jomo's, as one key: (block, variable, covariate)
    for fixed effects, (block, the two variables in order) for covariances. A nominal latent
    column V[L] is jomo's V.k, k = L's place among V's levels (the last is the reference in both);
    a binary variable's latent V is jomo's V.1."""
    block, inner = re.match(r"(beta\d|omega\d)\[(.+)\]$", name).groups()
    if jomo:
        parts = inner.replace("*Z1", "").split(",")
        parts = parts[::-1] if block.startswith("beta") else parts
    else:
        parts = inner.split(":") if block.startswith("beta") else [v.removesuffix(":Intercept") for v in inner.split(",")]
        if block.startswith("beta"):
            parts[1] = d.covariates.get(parts[1], parts[1])
        for i, v in enumerate(parts):
            m = re.match(r"(.+)\[(.+)\]$", v)
            if v in d.categorical:    # a binary variable's one latent: jomo's V.1
                parts[i] = f"{v}.1"
            elif m and m.group(1) in d.categorical:
                levels = sorted(float(x) for x in d.df[m.group(1)].dropna().unique())
                parts[i] = f"{m.group(1)}.{levels.index(float(m.group(2))) + 1}"
    return (block, *parts) if block.startswith("beta") else (block, *sorted(parts))


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, d: Design) -> pd.DataFrame:
    """Posterior mean and SD of every parameter both report, and z = the difference over its
    Monte Carlo standard error (each sampler's SD / sqrt(bulk ESS)). jomo models a binary
    variable as a nominal one whose latent is positive for its first category, ours for its
    second: its draws of that latent's coefficients and covariances are negated."""
    from mlimpute.diagnostics import ess_bulk

    keyed = {common_key(c, d, True): c for c in theirs.columns}
    binary = {f"{v}.1" for v, spec in d.model.variables.items() if getattr(spec, "kind", spec) == "binary"}
    rows = []
    for c in ours.columns:
        k = common_key(c, d, False)
        x, y = ours[c].to_numpy(float), theirs[keyed[k]].to_numpy(float) if k in keyed else None
        if y is None or np.ptp(x) == 0:
            continue
        if sum(part in binary for part in k[1:]) % 2:   # jomo's binary latent is ours negated
            y = -y
        se = np.hypot(x.std() / np.sqrt(ess_bulk(x[None])), y.std() / np.sqrt(ess_bulk(y[None])))
        rows.append((c, x.mean(), x.std(), y.mean(), y.std(), (x.mean() - y.mean()) / se))
    return pd.DataFrame(rows, columns=["parameter", "mean", "sd", "mean_jomo", "sd_jomo", "z"])


def run_ours(d: Design, burn: int, sweeps: int, seed: int) -> tuple[pd.DataFrame, float]:
    from threadpoolctl import threadpool_limits

    import mlimpute as mi

    df, model = d.df, d.model
    with warnings.catch_warnings():   # compile outside the timing
        warnings.simplefilter("ignore")
        mi.impute(df, model, n_imputations=1, burn=2, between=2, chains=1, seed=0)
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c0 = time.process_time()
        res = mi.impute(df, model, n_imputations=10, burn=burn, between=sweeps // 10, chains=1, seed=seed)
        seconds = time.process_time() - c0
    draws = pd.DataFrame(res.traces[0], columns=res.parameter_names)
    return draws, seconds


R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); burn <- as.integer(args[2]); sweeps <- as.integer(args[3])
if (nzchar(args[6])) suppressMessages(library(jomo, lib.loc = args[6])) else suppressMessages(library(jomo))
set.seed(as.integer(args[5]))
FRAMES
t <- system.time(r <- jomo.MCMCchain(Y = Y, Y2 = Y2, X = X, clus = clus, nburn = burn + sweeps,
                                      output = 0))[["elapsed"]]
keep <- (burn + 1):(burn + sweeps)
out <- list()
flat <- function(a, prefix, lower) {
  dn <- dimnames(a)
  for (i in seq_len(dim(a)[1])) for (j in seq_len(dim(a)[2])) {
    if (lower && j > i) next
    out[[sprintf("%s[%s,%s]", prefix, dn[[1]][i], dn[[2]][j])]] <<- a[i, j, keep]
  }
}
flat(r$collectbeta, "beta1", FALSE)
if (!is.null(r$collectbeta2)) flat(r$collectbeta2, "beta2", FALSE)
flat(r$collectomega, "omega1", TRUE)
flat(r$collectcovu, "omega2", TRUE)
write.csv(as.data.frame(out, check.names = FALSE), args[4], row.names = FALSE)
cat(sprintf("seconds=%.6f\n", t))
"""


def run_jomo(d: Design, burn: int, sweeps: int, seed: int, lib: str = "") -> tuple[pd.DataFrame, float] | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script, out = Path(tmp) / "d.csv", Path(tmp) / "ess.R", Path(tmp) / "draws.csv"
        d.df.to_csv(csv, index=False, na_rep="NA")
        script.write_text(R_SCRIPT.replace("FRAMES", d.r_frames))
        proc = subprocess.run(["Rscript", str(script), str(csv), str(burn), str(sweeps), str(out), str(seed), lib],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"  (R failed: {proc.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
            return None
        seconds = float(proc.stdout.strip().splitlines()[-1].partition("=")[2])
        return pd.read_csv(out), seconds


def ess_table(draws: pd.DataFrame, seconds: float, classify) -> pd.DataFrame:
    from mlimpute.diagnostics import ess_bulk, ess_tail

    rows = []
    per_k = 1000.0 / len(draws)
    for name in draws.columns:
        x = draws[name].to_numpy(float)
        if np.ptp(x) == 0:       # fixed by the model
            continue
        bulk, tail = ess_bulk(x[None]), ess_tail(x[None])
        rows.append((classify(name), name, bulk * per_k, tail * per_k, min(bulk, tail) / seconds))
    return pd.DataFrame(rows, columns=["class", "parameter", "bulk_per_1000", "tail_per_1000", "min_ess_per_s"])


def summarise(t: pd.DataFrame) -> pd.DataFrame:
    return t.groupby("class", sort=False).agg(
        n=("parameter", "size"), min_bulk=("bulk_per_1000", "min"), median_bulk=("bulk_per_1000", "median"),
        min_tail=("tail_per_1000", "min"), min_ess_per_s=("min_ess_per_s", "min"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["mixed", "jsp", "level2", "level2-continuous"], default="mixed")
    ap.add_argument("--sizes", nargs="+", default=["250x16"], help="J x n of the mixed and level2 designs")
    ap.add_argument("--burn", type=int, default=500)
    ap.add_argument("--sweeps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--rare", type=float, default=None,
                    help="collapsed.RARE: a category below this share of the values gets the collapsed moves")
    ap.add_argument("--compare", action="store_true", help="also the two samplers' posterior means")
    ap.add_argument("--standardize", choices=["yes", "no"], default="yes",
                    help="no: our sampler on the data's scale, so that its default priors are jomo's")
    ap.add_argument("--jomo-lib", default="", help="R library holding the jomo to run (default: the installed "
                    "one), e.g. the build of benchmarks/r/build_jomo_unclamped.sh")
    add_off_option(ap)
    a = ap.parse_args(argv)
    switch_off(a.off)
    if a.rare is not None:
        from mlimpute.sampler import collapsed
        collapsed.RARE = a.rare
    for size in (a.sizes if a.data != "jsp" else ["JSPmiss"]):
        J, n = map(int, size.split("x")) if a.data != "jsp" else (0, 0)
        d = design(a.data, J, n, a.seed)
        if a.standardize == "no":
            d = replace(d, model=replace(d.model, standardize=False))
        draws, sec = run_ours(d, a.burn, a.sweeps, a.seed)
        ours_t = ess_table(draws, sec, lambda v: classify(v, d.categorical))
        ours = summarise(ours_t)
        print(f"\n{size} ({len(d.df):,} rows), {a.burn} + {a.sweeps} sweeps; ours {sec:.1f} s CPU; smallest bulk ESS "
              f"{ours_t['bulk_per_1000'].min():.1f} per 1,000 sweeps ({ours_t.loc[ours_t['bulk_per_1000'].idxmin(), 'parameter']})")
        jomo = None if a.no_r else run_jomo(d, a.burn, a.sweeps, a.seed, a.jomo_lib)
        if jomo is not None:
            theirs_t = ess_table(jomo[0], jomo[1], lambda v: classify(v, d.categorical, jomo=True))
            theirs = summarise(theirs_t)
            print(f"smallest ESS per second over all parameters: ours {ours_t['min_ess_per_s'].min():.2f}, jomo "
                  f"{theirs_t['min_ess_per_s'].min():.3f}, ratio "
                  f"{ours_t['min_ess_per_s'].min() / theirs_t['min_ess_per_s'].min():.0f}")
            print(f"jomo {jomo[1]:.1f} s")
            ours = ours.merge(theirs, left_index=True, right_index=True, how="left", suffixes=("", "_jomo"))
            ours["ess_per_s_ratio"] = ours["min_ess_per_s"] / ours["min_ess_per_s_jomo"]
            if a.compare:
                with pd.option_context("display.width", 220, "display.max_rows", 200):
                    print(compare(draws, jomo[0], d).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        with pd.option_context("display.width", 220, "display.max_columns", 20):
            print(ours.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
