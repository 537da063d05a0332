"""R's jomo (substantive-model-compatible samplers jomo.lmer / jomo.glmer) on the datasets of
benchmarks/study_substantive.py, as the anchor for its ``smc`` method.

    python benchmarks/jomo_substantive.py --reps 3                  # a quick check
    python benchmarks/jomo_substantive.py --reps 100                # ~1 h on one core
    python benchmarks/jomo_substantive.py --reps 100 --designs binary

For each design and replication the data are ``study_substantive.simulate(design, rng)`` with the
rng of ``study_substantive.replicate`` (so the same datasets as the other methods). They are
written to a temporary directory, ``Rscript benchmarks/r/jomo_substantive.R DIR OUT.csv M NBURN
NBETWEEN`` imputes (M = 20, nburn = 1000, nbetween = 100: jomo's nbetween is the number of
iterations between two imputations), fits the analysis model with lme4 and pools with mitml (see
that script's header), and the rows (method ``jomo``, the format of study_substantive.py) are
appended to ``docs/data/substantive_jomo.csv``. Resumable: a (design, rep) whose ``_seconds`` row
is already there is skipped. Replications are sent to R in batches (``--batch``) so that an
interrupted run keeps what it finished.

At the end the summary of ``study_substantive.summarise`` for the jomo rows is printed (mean
estimate, relative bias, RMSE, coverage per design and parameter) with the seconds per
replication, ms per jomo iteration and the count of analysis fits that warned / were singular.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
R_SCRIPT = HERE / "r" / "jomo_substantive.R"
OUT_CSV = ROOT / "docs" / "data" / "substantive_jomo.csv"
R_PACKAGES = ("jomo", "lme4", "mitml")

sys.path.insert(0, str(HERE))
import study_substantive as ss  # noqa: E402


def check_r(rscript: str) -> None:
    """Exit with a message when Rscript or one of the R packages is missing."""
    if shutil.which(rscript) is None:
        sys.exit(f"jomo_substantive: '{rscript}' not found on PATH; install R (e.g. apt-get install -y "
                 "r-base-core r-cran-jomo r-cran-lme4 r-cran-mitml) or pass --rscript.")
    expr = ("p <- c(" + ", ".join(f'"{p}"' for p in R_PACKAGES) + "); "
            "miss <- p[!vapply(p, requireNamespace, logical(1), quietly = TRUE)]; "
            "cat(miss, sep = ' '); quit(status = length(miss) > 0)")
    r = subprocess.run([rscript, "-e", expr], capture_output=True, text=True)
    if r.returncode != 0:
        missing = r.stdout.strip() or "(could not tell: " + r.stderr.strip()[-300:] + ")"
        sys.exit(f"jomo_substantive: R package(s) missing: {missing}; install with e.g. "
                 f"apt-get install -y " + " ".join(f"r-cran-{p}" for p in missing.split()
                                                    if p.isidentifier()))


def dataset(design: str, rep: int) -> pd.DataFrame:
    """The incomplete data of replication ``rep`` exactly as study_substantive.replicate draws it."""
    rng = np.random.default_rng([20261201, rep, list(ss.FORMULA).index(design)])
    data, _full = ss.simulate(design, rng)
    return data[["g", "x", "z", "y"]]


def done_reps(csv: Path) -> set[tuple[str, int]]:
    if not csv.exists():
        return set()
    d = pd.read_csv(csv)
    d = d[(d["method"] == "jomo") & (d["parameter"] == "_seconds")]
    return set(zip(d["design"], d["rep"].astype(int)))


def run_batch(batch: list[tuple[str, int]], a, csv: Path) -> int:
    """Write the batch's datasets, run the R script, append its rows; the number of reps saved."""
    with tempfile.TemporaryDirectory(prefix="jomo_substantive_") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "data"
        data_dir.mkdir()
        for design, rep in batch:
            dataset(design, rep).to_csv(data_dir / f"{design}_{rep:04d}.csv", index=False)
        out = tmp / "out.csv"
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [a.rscript, str(R_SCRIPT), str(data_dir), str(out), str(a.m), str(a.burn), str(a.between)]
        proc = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout.splitlines():
            print("  R:", line, flush=True)
        if proc.returncode != 0:
            print(f"  Rscript exited with status {proc.returncode}; keeping the replications it finished",
                  flush=True)
        if not out.exists():
            return 0
        rows = pd.read_csv(out)
    # keep only complete replications (the R script writes a replication's rows at once, after
    # its _seconds row is computed, but be safe)
    complete = set(zip(rows.loc[rows["parameter"] == "_seconds", "design"],
                       rows.loc[rows["parameter"] == "_seconds", "rep"].astype(int)))
    rows = rows[[(d, int(r)) in complete for d, r in zip(rows["design"], rows["rep"])]]
    rows = rows[ss.COLUMNS]
    rows.to_csv(csv, mode="a", header=not csv.exists(), index=False)
    return len(complete)


def report(csv: Path, m: int) -> None:
    reps = pd.read_csv(csv)
    reps = reps[reps["method"] == "jomo"]
    summary = ss.summarise(reps)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print()
    for design in reps["design"].unique():
        e = reps[reps["design"] == design]
        tot = e.groupby("parameter")["estimate"].sum()
        avg = e.groupby("parameter")["estimate"].mean()
        n = e["rep"].nunique()

        def reps_with(par):
            return int((e.loc[e["parameter"] == par, "estimate"] > 0).sum())

        line = (f"{design}: {n} reps; seconds/rep {avg['_seconds']:.1f} (jomo {avg['_jomo_seconds']:.1f}, "
                f"{avg['_ms_per_iteration']:.2f} ms/iteration); analysis fits that warned "
                f"{int(tot['_fit_warnings'])}/{n * m} (in {reps_with('_fit_warnings')} reps), singular "
                f"{int(tot['_fit_singular'])}/{n * m} (in {reps_with('_fit_singular')} reps)")
        if "_jomo_warnings" in tot:
            k = int((e["parameter"] == "_jomo_warnings").sum())
            line += f"; jomo calls that warned {reps_with('_jomo_warnings')}/{k}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=100, help="replications 0..reps-1 of each design")
    ap.add_argument("--first", type=int, default=0, help="first replication")
    ap.add_argument("--designs", nargs="*", default=list(ss.FORMULA), choices=list(ss.FORMULA))
    ap.add_argument("--batch", type=int, default=5, help="replications per Rscript call")
    ap.add_argument("--m", type=int, default=20, help="imputations")
    ap.add_argument("--burn", type=int, default=1000, help="jomo nburn")
    ap.add_argument("--between", type=int, default=100, help="jomo nbetween")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="minutes; start no new batch after this much wall time")
    ap.add_argument("--rscript", default="Rscript")
    ap.add_argument("--csv", type=Path, default=OUT_CSV, help="per-replication rows (appended, resumed)")
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args()
    csv = a.csv
    if not a.summary_only:
        check_r(a.rscript)
        csv.parent.mkdir(parents=True, exist_ok=True)
        have = done_reps(csv)
        todo = [(d, r) for d in a.designs for r in range(a.first, a.first + a.reps) if (d, r) not in have]
        print(f"{len(todo)} replications to run ({len(have)} already in {csv})", flush=True)
        t0 = time.perf_counter()
        saved = 0
        for k in range(0, len(todo), a.batch):
            if a.time_limit is not None and time.perf_counter() - t0 > 60 * a.time_limit:
                print(f"time limit of {a.time_limit} min reached; {len(todo) - k} replications left", flush=True)
                break
            saved += run_batch(todo[k:k + a.batch], a, csv)
            print(f"{saved}/{len(todo)} saved, {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"wall time {time.perf_counter() - t0:.0f} s", flush=True)
    if csv.exists():
        report(csv, a.m)


if __name__ == "__main__":
    main()
