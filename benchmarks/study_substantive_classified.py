"""Simulation study of substantive-model-compatible imputation with several classifications and
with variance functions (the general sampler's component, ``sampler/outcome_multi.py``), with
known truth.

    python benchmarks/study_substantive_classified.py     # 200 replications of each design: ~40 min on 1 core
    python benchmarks/study_substantive_classified.py --reps 30 --seed 7 --csv /tmp/r.csv.gz --md /tmp/r.md
    python benchmarks/study_substantive_classified.py --reps 5 --designs crossed --csv /tmp/c.csv.gz --md /tmp/c.md

Seconds per replication (full + cc + smc, one core shared with other work): nested3 2.9,
crossed 2.4, varfun 1.7, binary3 3.8, membership 6.2. The stored replications
(``docs/data/substantive_classified_reps.csv.gz``) of nested3, crossed and varfun ran at commit
5b43f2b, those of binary3 (re-run after mi.glmm's fix of a warm start that failed) and
membership at fba8806; the commits between change no model and no prior these designs use.

Designs (x has 30–40 % missing values, more often where the outcome is high: missing at random
given the outcome, so complete cases are biased):

- ``nested3``: 40 schools × 4 classes × 8 pupils. w class-level (school part Var 0.25, class
  part Var 0.75), x = 0.5 w + r_school + r_class + e_x (Var 0.1, 0.1, 1).
  y = 0.5 + 0.5 x + 0.4 w + u_school + u_class + v_class·x + e, Var(u_school) = 0.3,
  Var(u_class) = 0.2, Var(v_class) = 0.15 (independent of u_class), σ² = 1. x missing MAR on y,
  w missing in 20 % of the classes (completely at random). Imputation
  ``ImputationModel(variables={x, w: level="cls"}, cluster=["school", "cls"], substantive=...)``
  (class ids unique across schools); analysis ``y ~ x + w + (1 | school) + (1 + x | cls)``.
- ``crossed``: 1,200 rows, each in a random one of 40 a-units and of 30 b-units; z level-1
  complete; x = 0.3 z + r_a + r_b + e_x (Var 0.2, 0.1, 1).
  y = 1 + 0.5 x + 0.3 z + 0.3 x·z + u_a + u_b + e, Var(u_a) = 0.3, Var(u_b) = 0.2, σ² = 1.
  y missing in 10 % of the rows (completely at random); x missing where y is observed MAR on
  y, where y is missing with probability 0.3. Imputation
  ``ImputationModel(variables={x}, cluster=Crossed("a", "b"), covariates=["z"], substantive=...)``;
  analysis ``y ~ x * z + (1 | a) + (1 | b)``.
- ``varfun``: 100 clusters × 10; sex level-1 (Bernoulli 0.5); x = r_g + e_x, Var(r_g) = 0.2,
  SD(e_x) = 0.6 (sex 0) and 1.5 (sex 1). y = 0.5 x + 0.3 sex + 0.3 x·sex + u0 + u1 x + e,
  Var(u0) = 0.3, Var(u1) = 0.15, σ² = 1. Imputation ``variables={"x": Variable("continuous",
  variance="~ sex")}``, cluster g, covariates sex; analysis ``y ~ x * sex + (1 + x | g)``.
- ``binary3``: 50 schools × 4 classes × 10 pupils; x = r_school + r_class + e_x (Var 0.1,
  0.1, 1); logit P(y = 1) = −0.3 + 0.8 x + u_school + u_class, Var 0.4, 0.3. x missing MAR on
  y (P = expit(−1.2 + y)). Imputation ``family="binomial"`` (logit), cluster ["school", "cls"];
  analysis ``glmm(y ~ x + (1 | school) + (1 | cls))`` (Laplace).
- ``membership``: 1,200 pupils, half in one of 60 schools, half in two (weights 0.6, 0.4; a
  pupil of one school has its id twice, the second with weight 0); x = Σ w r_school + e_x (Var
  0.2, 1); y = 0.5 + 0.5 x + Σ w (u_school + v_school·x) + e, Var(u) = 0.3, Var(v) = 0.15
  (independent), σ² = 1; x missing MAR on y. Imputation ``cluster=Membership(["s1", "s2"],
  ["w1", "w2"])``; analysis ``y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2)))``.

Methods: ``full`` (the analysis before deletion), ``cc`` (complete cases), ``smc``
(ImputationModel(substantive=...), M = 10 imputations from 2 chains, burn-in 1,000, 100 sweeps
between imputations). Fixed effects: model-based Wald intervals (full, cc) and Rubin's rules with
Barnard–Rubin df (smc); variance components: the estimate (full, cc) or the average over the
imputations (smc) for bias, Wald intervals on the log scale (full, cc: ``fit.varcomp_cov()``) and
Rubin's rules on the log scale (smc) for coverage; covariances on the identity scale.

The per-replication rows go to ``--csv`` (resumed: replications already there are not rerun;
change ``--seed`` with a new file), the markdown to ``--md`` and stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
OUT_CSV = ROOT / "docs" / "data" / "substantive_classified_reps.csv.gz"
OUT_MD = ROOT / "docs" / "substantive_classified.md"

import mlimpute as mi  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study as study  # noqa: E402



def _std(y):
    return (y - y.mean()) / y.std()


def simulate(design: str, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data with missing values, the same before deletion)."""
    if design in ("nested3", "binary3"):
        S, C, n = (40, 4, 8) if design == "nested3" else (50, 4, 10)
        N = S * C * n
        school = np.repeat(np.arange(S), C * n)
        cls = np.repeat(np.arange(S * C), n)          # unique class ids
        if design == "nested3":
            w_cls = rng.normal(0, 0.5, S)[np.arange(S * C) // C] + rng.normal(0, np.sqrt(0.75), S * C)
            w = w_cls[cls]
            x = (0.5 * w + rng.normal(0, np.sqrt(0.1), S)[school] + rng.normal(0, np.sqrt(0.1), S * C)[cls]
                 + rng.normal(size=N))
            y = (0.5 + 0.5 * x + 0.4 * w + rng.normal(0, np.sqrt(0.3), S)[school]
                 + rng.normal(0, np.sqrt(0.2), S * C)[cls] + rng.normal(0, np.sqrt(0.15), S * C)[cls] * x
                 + rng.normal(size=N))
            full = pd.DataFrame({"school": school, "cls": cls, "x": x, "w": w, "y": y})
            data = full.copy()
            data.loc[rng.random(N) < study.expit(-0.75 + 1.0 * _std(y)), "x"] = np.nan
            data.loc[np.isin(cls, rng.choice(S * C, S * C // 5, replace=False)), "w"] = np.nan
            return data, full
        x = rng.normal(0, np.sqrt(0.1), S)[school] + rng.normal(0, np.sqrt(0.1), S * C)[cls] + rng.normal(size=N)
        eta = -0.3 + 0.8 * x + rng.normal(0, np.sqrt(0.4), S)[school] + rng.normal(0, np.sqrt(0.3), S * C)[cls]
        y = (rng.random(N) < study.expit(eta)).astype(float)
        full = pd.DataFrame({"school": school, "cls": cls, "x": x, "y": y})
        data = full.copy()
        data.loc[rng.random(N) < study.expit(-1.2 + 1.0 * y), "x"] = np.nan
        return data, full
    if design == "membership":
        K, N = 60, 1200
        s1, s2, two = rng.integers(0, K, N), rng.integers(0, K, N), rng.random(N) < 0.5
        s2 = np.where(two, s2, s1)                     # one school: its id twice, the second weight 0
        w1, w2 = np.where(two, 0.6, 1.0), np.where(two, 0.4, 0.0)
        u, v, r = rng.normal(0, np.sqrt(0.3), K), rng.normal(0, np.sqrt(0.15), K), rng.normal(0, np.sqrt(0.2), K)
        x = w1 * r[s1] + w2 * r[s2] + rng.normal(size=N)
        y = 0.5 + 0.5 * x + w1 * (u[s1] + v[s1] * x) + w2 * (u[s2] + v[s2] * x) + rng.normal(size=N)
        full = pd.DataFrame({"s1": s1, "s2": s2, "w1": w1, "w2": w2, "x": x, "y": y})
        data = full.copy()
        data.loc[rng.random(N) < study.expit(-0.75 + 1.0 * _std(y)), "x"] = np.nan
        return data, full
    if design == "crossed":
        A, B, N = 40, 30, 1200
        a, b = rng.integers(0, A, N), rng.integers(0, B, N)
        z = rng.normal(size=N)
        x = 0.3 * z + rng.normal(0, np.sqrt(0.2), A)[a] + rng.normal(0, np.sqrt(0.1), B)[b] + rng.normal(size=N)
        y = (1 + 0.5 * x + 0.3 * z + 0.3 * x * z + rng.normal(0, np.sqrt(0.3), A)[a]
             + rng.normal(0, np.sqrt(0.2), B)[b] + rng.normal(size=N))
        full = pd.DataFrame({"a": a, "b": b, "z": z, "x": x, "y": y})
        data = full.copy()
        y_miss = rng.random(N) < 0.1
        p = np.where(y_miss, 0.3, study.expit(-0.75 + 1.0 * _std(y)))
        data.loc[rng.random(N) < p, "x"] = np.nan
        data.loc[y_miss, "y"] = np.nan
        return data, full
    J, n = 100, 10
    N = J * n
    g = np.repeat(np.arange(J), n)
    sex = (rng.random(N) < 0.5).astype(float)
    x = rng.normal(0, np.sqrt(0.2), J)[g] + rng.normal(size=N) * np.where(sex == 1, 1.5, 0.6)
    y = (0.5 * x + 0.3 * sex + 0.3 * x * sex + rng.normal(0, np.sqrt(0.3), J)[g]
         + rng.normal(0, np.sqrt(0.15), J)[g] * x + rng.normal(size=N))
    full = pd.DataFrame({"g": g, "sex": sex, "x": x, "y": y})
    data = full.copy()
    data.loc[rng.random(N) < study.expit(-0.75 + 1.0 * _std(y)), "x"] = np.nan
    return data, full


FORMULA = {
    "nested3": "y ~ x + w + (1 | school) + (1 + x | cls)",
    "crossed": "y ~ x * z + (1 | a) + (1 | b)",
    "varfun": "y ~ x * sex + (1 + x | g)",
    "binary3": "y ~ x + (1 | school) + (1 | cls)",
    "membership": "y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2)))",
}
TRUTH = {
    "nested3": {"Intercept": 0.5, "x": 0.5, "w": 0.4, "var(school:Intercept)": 0.3,
                "var(cls:Intercept)": 0.2, "var(cls:x)": 0.15, "cov(cls:Intercept,x)": 0.0, "Residual": 1.0},
    "crossed": {"Intercept": 1.0, "x": 0.5, "z": 0.3, "x:z": 0.3, "var(a:Intercept)": 0.3,
                "var(b:Intercept)": 0.2, "Residual": 1.0},
    "varfun": {"Intercept": 0.0, "x": 0.5, "sex": 0.3, "x:sex": 0.3, "var(g:Intercept)": 0.3,
               "var(g:x)": 0.15, "cov(g:Intercept,x)": 0.0, "Residual": 1.0},
    "binary3": {"Intercept": -0.3, "x": 0.8, "var(school:Intercept)": 0.4, "var(cls:Intercept)": 0.3},
    "membership": {"Intercept": 0.5, "x": 0.5, "var(mm(s1, s2):Intercept)": 0.3, "var(mm(s1, s2):x)": 0.15,
                   "cov(mm(s1, s2):Intercept,x)": 0.0, "Residual": 1.0},
}
FAMILY = {"binary3": "binomial"}
M, CHAINS, BURN, BETWEEN = 10, 2, 1000, 100
METHODS = ["full", "cc", "smc"]


def model(design: str) -> mi.ImputationModel:
    family = FAMILY.get(design, "gaussian")
    if design == "nested3":
        return mi.ImputationModel(variables={"x": "continuous", "w": mi.Variable("continuous", level="cls")},
                                  cluster=["school", "cls"], substantive=FORMULA[design])
    if design == "crossed":
        return mi.ImputationModel(variables={"x": "continuous"}, cluster=mi.Crossed("a", "b"), covariates=["z"],
                                  substantive=FORMULA[design])
    if design == "varfun":
        return mi.ImputationModel(variables={"x": mi.Variable("continuous", variance="~ sex")}, cluster="g",
                                  covariates=["sex"], substantive=FORMULA[design])
    if design == "membership":
        return mi.ImputationModel(variables={"x": "continuous"}, substantive=FORMULA[design],
                                  cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))
    return mi.ImputationModel(variables={"x": "continuous"}, cluster=["school", "cls"],
                              substantive=FORMULA[design], family=family)


def _fit(design: str, data: pd.DataFrame):
    if FAMILY.get(design) == "binomial":
        return mi.glmm(FORMULA[design], data, family="binomial")
    return mi.lmm(FORMULA[design], data, reml=True)


def _warning_rows(design, method, rep, caught) -> list[tuple]:
    """One bookkeeping row per distinct warning (category and the start of its text)."""
    seen = Counter(f"{w.category.__name__}: {' '.join(str(w.message).split())[:160]}" for w in caught)
    return [(design, method, rep, f"_warning {text}", count, np.nan, np.nan) for text, count in seen.items()]


def replicate(design: str, rep: int, methods: list[str], seed: int,
              m: int = M, burn: int = BURN, between: int = BETWEEN, chains: int = CHAINS) -> list[tuple]:
    k = list(FORMULA).index(design)
    data, full = simulate(design, np.random.default_rng([seed, rep, k]))
    rows: list[tuple] = [(design, "data", rep, f"_missing {c}", float(data[c].isna().mean()), np.nan, np.nan)
                         for c in data.columns if data[c].isna().any()]
    name = study.grouped_vc_name
    for method in methods:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if method == "full":
                    rows += study.rows_single(_fit(design, full), design, method, rep, name, varcomp_intervals=True)
                elif method == "cc":
                    rows += study.rows_single(_fit(design, data.dropna()), design, method, rep, name,
                                              varcomp_intervals=True)
                else:
                    res = mi.impute(data, model(design), n_imputations=m, burn=burn, between=between,
                                    chains=chains, seed=np.random.SeedSequence([seed, rep, k, 1]))
                    t1 = time.perf_counter()
                    pooled = mi.analyse(res, FORMULA[design], family=FAMILY.get(design, "gaussian"))
                    rows += study.rows_pooled(pooled, design, method, rep, name)
                    rows.append((design, method, rep, "_impute_seconds", t1 - t0, np.nan, np.nan))
                    rows.append((design, method, rep, "_max_rhat", float(res.diagnostics()["rhat"].max()),
                                 np.nan, np.nan))
            except Exception as e:  # a crash is a finding: recorded, the study goes on
                rows.append((design, method, rep, f"_error {type(e).__name__}: {' '.join(str(e).split())[:200]}",
                             1.0, np.nan, np.nan))
        rows.append((design, method, rep, "_seconds", time.perf_counter() - t0, np.nan, np.nan))
        rows += _warning_rows(design, method, rep, caught)
    return rows


def summarise(reps: pd.DataFrame) -> pd.DataFrame:
    out = study.summarise(reps, TRUTH)
    # absolute bias's Monte Carlo SE (study.summarise gives it relative to the truth only)
    sd = (reps[~reps["parameter"].str.startswith("_")].groupby(["design", "method", "parameter"])["estimate"]
          .agg(lambda v: np.std(v.to_numpy(float), ddof=1) / np.sqrt(v.size)).rename("bias_mcse").reset_index())
    out = out.merge(sd, on=["design", "method", "parameter"], how="left")
    # each method's estimate minus the full data's, paired by replication: the bias that the
    # missing data and their handling add, without the full-data analysis's own bias or noise
    est = reps[~reps["parameter"].str.startswith("_")].pivot_table(
        index=["design", "parameter", "rep"], columns="method", values="estimate", aggfunc="first")
    paired = []
    if "full" in est:
        for method in [m for m in est.columns if m != "full"]:
            diff = (est[method] - est["full"]).dropna().groupby(level=["design", "parameter"])
            paired.append(pd.DataFrame({"vs_full": diff.mean(), "vs_full_mcse": diff.std(ddof=1) / np.sqrt(diff.size())})
                          .reset_index().assign(method=method))
    if paired:
        out = out.merge(pd.concat(paired), on=["design", "method", "parameter"], how="left")
    else:
        out = out.assign(vs_full=np.nan, vs_full_mcse=np.nan)
    return out


def _warning_key(text: str) -> str:
    """A warning's text with its numbers and lists as # and what follows "worst:" cut, so that
    the same warning of different replications is counted once."""
    text = re.sub(r"(?<![A-Za-z])\d+(\.\d+)?(?!\s*[|+])", "#", text)
    text = re.sub(r"\[#(, #)*\]", "[#]", text)
    text = re.sub(r"worst: .*", "worst: …", text)
    return text[:150]


def markdown(summary: pd.DataFrame, reps: pd.DataFrame, settings: str) -> str:
    lines = ["# Substantive-model-compatible imputation with several classifications and variance functions: "
             "simulation study", "",
             f"Made by `python benchmarks/study_substantive_classified.py {settings}` (designs in its docstring). "
             "Bias = mean estimate − truth ± its Monte Carlo SE (relative bias in % of the truth beside it; "
             "`− full (paired)`: the mean of the method's estimate minus the full-data estimate of the same "
             "replication ± its Monte Carlo SE, the bias the missing data and their handling add); "
             "coverage of the nominal 95% interval ± its Monte Carlo SE: Wald (model SE) for `full` and `cc` "
             "(variances on the log scale), Rubin's rules for `smc` (fixed effects Barnard–Rubin df; variances "
             "on the log scale, their estimate the average over imputations). `full`: before deletion; `cc`: "
             "complete cases; `smc`: mlimpute with `substantive=` "
             f"(M = {M}, {CHAINS} chains, burn-in {BURN}, {BETWEEN} between).", ""]
    for design in [d for d in FORMULA if d in set(summary["design"])]:
        d = summary[summary["design"] == design]
        n = int(d["reps"].max())
        lines += [f"## {design}: `{FORMULA[design]}` ({n} replications)", "",
                  "| parameter | truth | method | mean | bias ± MCSE | rel. bias % | − full (paired) | RMSE | coverage % |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for par in TRUTH[design]:
            for method in METHODS:
                r = d[(d["parameter"] == par) & (d["method"] == method)]
                if r.empty:
                    continue
                r = r.iloc[0]
                rb, cov = study.cells(r)
                vf = "" if not np.isfinite(r.vs_full) else f"{r.vs_full:+.4f} ± {r.vs_full_mcse:.4f}"
                lines.append(f"| {par} | {r.truth:g} | {method} | {r['mean']:.4f} | {r.bias:+.4f} ± "
                             f"{r.bias_mcse:.4f} | {rb} | {vf} | {r.rmse:.4f} | {cov} |")
        book = reps[reps["design"] == design]
        notes = []
        miss = book[book["parameter"].str.startswith("_missing ")].groupby("parameter")["estimate"].mean()
        if len(miss):
            notes.append("missing: " + ", ".join(f"{p.split()[1]} {100 * v:.1f}%" for p, v in miss.items()))
        per_rep = book[book["parameter"] == "_seconds"].groupby("rep")["estimate"].sum().mean()
        sec = book[book["parameter"] == "_seconds"].groupby("method")["estimate"].mean()
        imp = book[book["parameter"] == "_impute_seconds"]["estimate"].mean()
        notes.append(f"seconds per replication {per_rep:.1f} (" + ", ".join(f"{m} {s:.1f}" for m, s in sec.items())
                     + (f"; of smc, imputation {imp:.1f}" if np.isfinite(imp) else "") + ")")
        rh = book[book["parameter"] == "_max_rhat"]["estimate"]
        if len(rh):
            notes.append(f"smc's largest R-hat per replication: median {rh.median():.3f}, max {rh.max():.3f}")
        worst = Counter(m.group(1) for p in book["parameter"] if p.startswith("_warning ConvergenceWarning: R-hat >")
                        for m in [re.search(r"worst: (\S+)", p)] if m)
        if worst:
            notes.append("parameter named worst by smc's R-hat warnings: "
                         + ", ".join(f"{p} ({c})" for p, c in worst.most_common()))
        for kind in ("_error ", "_warning "):
            sub = book[book["parameter"].str.startswith(kind)]
            sub = sub.assign(parameter=sub["parameter"].map(_warning_key))
            for (method, par), g in sub.groupby(["method", "parameter"]):
                notes.append(f"{method}: {par[len(kind):]} (in {g['rep'].nunique()} of {n} replications"
                             + (f", {int(g['estimate'].sum())} times" if kind == "_warning " else "") + ")")
        lines += [""] + [f"- {x}" for x in notes] + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="replications per design")
    ap.add_argument("--seed", type=int, default=20261203, help="base seed (data: [seed, rep, design])")
    ap.add_argument("--designs", nargs="*", default=list(FORMULA), choices=list(FORMULA))
    ap.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    ap.add_argument("--csv", type=Path, default=OUT_CSV, help="per-replication results (resumed)")
    ap.add_argument("--md", type=Path, default=OUT_MD, help="the summary table")
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args(argv)
    a.csv.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(a.csv) if a.csv.exists() else pd.DataFrame(columns=study.COLUMNS)
    if not a.summary_only:
        have = set(map(tuple, done[["design", "rep", "method"]].drop_duplicates().to_numpy().tolist()))
        todo = [(d, r, [m for m in a.methods if (d, r, m) not in have]) for d in a.designs for r in range(a.reps)]
        todo = [t for t in todo if t[2]]
        print(f"{len(todo)} replications to run", file=sys.stderr, flush=True)
        t_start = time.perf_counter()
        for i, (design, rep, methods) in enumerate(todo):
            rows = replicate(design, rep, methods, a.seed)
            pd.DataFrame(rows, columns=study.COLUMNS).to_csv(a.csv, mode="a", header=not a.csv.exists(), index=False)
            sec = sum(r[4] for r in rows if r[3] == "_seconds")
            print(f"{i + 1}/{len(todo)} {design} rep {rep}: {sec:.1f} s (total {time.perf_counter() - t_start:.0f} s)",
                  file=sys.stderr, flush=True)
        done = pd.read_csv(a.csv)
        study.compact(done, a.csv)
    done = done[done["design"].isin(a.designs) & (done["rep"] < a.reps)]
    settings = f"--reps {a.reps} --seed {a.seed}" + (
        f" --designs {' '.join(a.designs)}" if list(a.designs) != list(FORMULA) else "")
    text = markdown(summarise(done), done, settings)
    a.md.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
