"""Mixing speed: bulk and tail ESS per 1,000 sweeps and per second for every parameter class,
ours vs jomo (``jomo.MCMCchain``'s collected draws), same data, same run.

    python benchmarks/bench_ess.py                        # 250 clusters x 16, 2,000 sweeps
    python benchmarks/bench_ess.py --sizes 100x10 --sweeps 500 --no-r
    python benchmarks/bench_ess.py --no-r --off expansion   # what a move buys: the same run without it

Data: ``bench_sampler.simulate(J, n, "mixed")``: y1, y2 continuous, b binary, f 3-category
nominal at level 1, w continuous at level 2, covariate x, 20% of every variable missing. Both
samplers run one chain of ``--burn`` then ``--sweeps`` iterations; ESS (rank-normalised bulk and
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
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sampler as bs  # noqa: E402
from _moves import add_off_option, switch_off  # noqa: E402

CATEGORICAL = ("b", "f")


def _cls(level: str, a: str, b: str | None) -> str:
    if level == "beta":
        return "fixed effects"
    if level == "2":
        return "level-2 covariances"
    cats = sum(any(x == c or x.startswith(c + "[") or x.startswith(c + ".") for c in CATEGORICAL) for x in (a, b))
    return ["level-1 cov, continuous", "level-1 cov, categorical x continuous",
            "level-1 cov, categorical x categorical"][cats]


def classify_ours(name: str) -> str:
    if name.startswith("beta"):
        return _cls("beta", name, None)
    m = re.match(r"omega(\d)\[(.+),(.+)\]$", name)
    return _cls(m.group(1), m.group(2), m.group(3))


def run_ours(df: pd.DataFrame, burn: int, sweeps: int, seed: int) -> tuple[pd.DataFrame, float]:
    from threadpoolctl import threadpool_limits

    import mlimpute as mi

    model = bs._model("mixed")
    with warnings.catch_warnings():   # compile outside the timing
        warnings.simplefilter("ignore")
        mi.impute(bs.simulate(5, 4, "mixed"), model, n_imputations=1, burn=2, between=2, chains=1, seed=0)
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
suppressMessages(library(jomo))
set.seed(as.integer(args[5]))
Y <- data.frame(y1 = d$y1, y2 = d$y2, b = factor(d$b), f = factor(d$f))
Y2 <- data.frame(w = d$w); X <- data.frame(cons = 1, x = d$x)
t <- system.time(r <- jomo.MCMCchain(Y = Y, Y2 = Y2, X = X, clus = d$g, nburn = burn + sweeps,
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


def classify_jomo(name: str) -> str:
    if name.startswith("beta"):
        return _cls("beta", name, None)
    m = re.match(r"omega(\d)\[(.+),(.+)\]$", name)
    return _cls(m.group(1), m.group(2).replace("*Z1", ""), m.group(3).replace("*Z1", ""))


def run_jomo(df: pd.DataFrame, burn: int, sweeps: int, seed: int) -> tuple[pd.DataFrame, float] | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv, script, out = Path(tmp) / "d.csv", Path(tmp) / "ess.R", Path(tmp) / "draws.csv"
        df.to_csv(csv, index=False, na_rep="NA")
        script.write_text(R_SCRIPT)
        proc = subprocess.run(["Rscript", str(script), str(csv), str(burn), str(sweeps), str(out), str(seed)],
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
    ap.add_argument("--sizes", nargs="+", default=["250x16"])
    ap.add_argument("--burn", type=int, default=500)
    ap.add_argument("--sweeps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-r", action="store_true")
    add_off_option(ap)
    a = ap.parse_args(argv)
    switch_off(a.off)
    for size in a.sizes:
        J, n = map(int, size.split("x"))
        df = bs.simulate(J, n, "mixed", seed=a.seed)
        draws, sec = run_ours(df, a.burn, a.sweeps, a.seed)
        ours = summarise(ess_table(draws, sec, classify_ours))
        print(f"\n{J} clusters x {n} ({J * n:,} rows), {a.burn} + {a.sweeps} sweeps; ours {sec:.1f} s CPU")
        jomo = None if a.no_r else run_jomo(df, a.burn, a.sweeps, a.seed)
        if jomo is not None:
            theirs = summarise(ess_table(jomo[0], jomo[1], classify_jomo))
            print(f"jomo {jomo[1]:.1f} s")
            ours = ours.merge(theirs, left_index=True, right_index=True, how="left", suffixes=("", "_jomo"))
            ours["ess_per_s_ratio"] = ours["min_ess_per_s"] / ours["min_ess_per_s_jomo"]
        with pd.option_context("display.width", 220, "display.max_columns", 20):
            print(ours.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
