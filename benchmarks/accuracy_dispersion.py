"""Variance-function LMMs against nlme and glmmTMB, printed: the numbers behind
tests/analysis/test_dispersion_reference.py (which asserts them at 1e-4 relative but prints nothing),
and fit times beside R's.

    python benchmarks/accuracy_dispersion.py            # ~5 s
    python benchmarks/accuracy_dispersion.py --large    # + N = 50,000 against nlme and glmmTMB, ~1 min

Per reference (tests/fixtures/dispersion, made by make_dispersion.R; PROVENANCE.md there) and
method: the largest relative difference of the fixed effects, their SEs, the variance components
(covariances relative to their group's variances), the log-variance coefficients γ and their SEs,
and the absolute difference of the log-likelihoods. Times: ours, the median of ``--repeat`` fits
(formula parsing and design building included); R's, the median elapsed seconds of 5 fits with
the package's default controls, measured by make_dispersion.R when it made the fixtures (on the
same 2-core machine).

``--large``: bench_lmm.py's simulated data (1,000 clusters x 50, random intercept and slope)
with an outcome ``yh = y + s_i z_i``, ``z_i ~ N(0, 1)``, ``s_i = 1.3^[sex_i = b] exp(0.15 w_i)``, so that
its residual variance ``1 + s_i²`` depends on sex and w; ``yh ~ x + w + (1 + x | g)`` by REML with ``dispersion="~ sex + w"``, ours against
nlme (varComb(varIdent, varExp)) and glmmTMB (dispformula) run in the same run by
``benchmarks/r/dispersion_bench.R`` (each once, default controls).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "analysis"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import mlimpute as mi  # noqa: E402
from bench_lmm import simulate  # noqa: E402
from test_dispersion_reference import CASES, FIX, compare, fit_case  # noqa: E402

R_SCRIPT = ROOT / "benchmarks" / "r" / "dispersion_bench.R"


def large(seed: int = 20240601) -> None:
    df = simulate(1000, 50, seed)
    rng = np.random.default_rng(seed + 1)
    df["sex"] = rng.choice(["a", "b"], len(df))
    df["yh"] = df["y"] + rng.normal(size=len(df)) * np.exp(0.15 * df["w"]) * np.where(df["sex"] == "b", 1.3, 1.0)
    t0 = time.perf_counter()
    fit = mi.lmm("yh ~ x + w + (1 + x | g)", df, dispersion="~ sex + w")
    secs = time.perf_counter() - t0
    gamma = fit.dispersion_params
    print(f"\nN = {len(df):,}, J = 1,000: yh ~ x + w + (1 + x | g), REML, dispersion ~ sex + w")
    rows = [{"fit": f"mlimpute {mi.__version__}", "seconds": secs, "logLik": fit.loglik,
             "gamma_sex": gamma["sex[T.b]"], "gamma_w": gamma["w"]}]
    if shutil.which("Rscript") is None:
        print("Rscript not found: nlme/glmmTMB comparison skipped")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data, out = Path(tmp) / "data.csv", Path(tmp) / "out.csv"
            df.to_csv(data, index=False)
            subprocess.run(["Rscript", str(R_SCRIPT), str(data), str(out)], check=True)
            for _, r in pd.read_csv(out).iterrows():
                rows.append({"fit": f"{r.package} {r.version}", "seconds": r.seconds, "logLik": r.logLik,
                             "gamma_sex": r.gamma_sex, "gamma_w": r.gamma_w})
    print(pd.DataFrame(rows).to_string(index=False, formatters={
        "seconds": "{:.2f}".format, "logLik": "{:.4f}".format, "gamma_sex": "{:.6f}".format,
        "gamma_w": "{:.6f}".format}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large", action="store_true", help="also N = 50,000 against nlme and glmmTMB")
    args = parser.parse_args()
    rows = []
    for ref, (formula, data, dispersion, reml) in CASES.items():
        secs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fit = fit_case(ref)
            secs.append(time.perf_counter() - t0)
        err = compare(fit, ref)
        info = pd.read_csv(FIX / f"{ref}_fit.csv").iloc[0]
        rows.append({"reference": f"{info['package']} {info['version']}", "data": data,
                     "dispersion": dispersion, "method": "REML" if reml else "ML", **err,
                     "ours_s": float(np.median(secs)), "R_s": float(info["r_seconds"])})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, formatters={
            **{c: "{:.1e}".format for c in ("beta", "se_beta", "varcomp", "gamma", "se_gamma", "loglik_abs")},
            "ours_s": "{:.3f}".format, "R_s": "{:.3f}".format}))
    worst = table[["beta", "se_beta", "varcomp", "gamma", "se_gamma"]].max()
    print("\nlargest relative differences over all cases:", ", ".join(f"{k} {v:.1e}" for k, v in worst.items()),
          f"; logLik {table.loglik_abs.max():.1e} absolute")
    if args.large:
        large()


if __name__ == "__main__":
    main()
