"""Sampler speed and memory with several classifications: a national pupil cohort (three-level
nested) and a cross-classification.

    python benchmarks/bench_classifications.py                  # both, the issue's sizes
    python benchmarks/bench_classifications.py --case nested --schools 300
    python benchmarks/bench_classifications.py --substantive --schools 300   # beside the analysis model

- nested: pupils in classes in schools (default 600,000 pupils in 30,000 classes in 3,000
  schools), four variables of mixed types: a continuous score and a binary indicator per
  pupil, a continuous class-level variable and a 3-category nominal school-level variable, a
  complete pupil covariate; 20% of each missing. Target: ≤ 0.3 s per sweep, memory ≤ 4× data.
- crossed: 100,000 pupils in 1,000 primary × 500 secondary schools, a continuous and a binary
  pupil variable and a continuous primary-level variable. Target: ≤ 0.1 s per sweep.
- ``--substantive``: each case also with the score as the outcome of an analysis model
  (``sampler/outcome_multi``), nested ``score ~ x + fsm + size + C(type) + (1 | school) +
  (1 | school:class)``, crossed ``score ~ x + fsm + p + (1 | primary) + (1 | secondary)``, beside
  the joint model without the score (the cost of the component: the ratio printed).

Each case runs in a fresh process: ms per sweep (wall and process CPU time, median of 3 blocks
after a warm-up; the machine is shared, CPU time is the steadier) and the peak of the sampler's
array allocations (tracemalloc: model arrays, state and the sweeps' temporaries) as a multiple
of the data's size in memory (the DataFrame's ``memory_usage(deep=True)``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pandas as pd
from _timing import timed_sweeps


def nested(rng, schools: int, classes_per: int = 10, pupils_per: int = 20,
           mode: str = "joint") -> tuple[pd.DataFrame, object]:
    import mlimpute as mi

    S, C, n = schools, classes_per, pupils_per
    N = S * C * n
    school = np.repeat(np.arange(S), C * n)
    cls = np.repeat(np.arange(S * C), n)
    us = rng.normal(0, 0.5, S)
    uc = rng.normal(0, 0.4, S * C)
    x = rng.normal(size=N)
    lat = rng.normal(size=(S, 2)) + us[:, None]
    df = pd.DataFrame({
        "school": school, "class": cls % C, "x": x,
        "score": 0.5 * x + us[school] + uc[cls] + rng.normal(size=N),
        "fsm": (0.3 * x + us[school] + rng.normal(size=N) > 0).astype(float),
        "size": (25 + 3 * uc + rng.normal(size=S * C))[cls],
        "type": np.array(["academy", "maintained", "independent"])[
            np.where(lat.max(axis=1) > 0, lat.argmax(axis=1), 2)][school],
    })
    for c in ["score", "fsm"]:
        df.loc[rng.random(N) < 0.2, c] = np.nan
    df.loc[np.isin(cls, rng.choice(S * C, S * C // 5, replace=False)), "size"] = np.nan
    df.loc[np.isin(school, rng.choice(S, S // 5, replace=False)), "type"] = None
    variables = {"score": "continuous", "fsm": "binary", "size": mi.Variable("continuous", level="class"),
                 "type": mi.Variable("nominal", level="school")}
    return df, _model(mi, ["school", "class"], variables, mode,
                      "score ~ x + fsm + size + C(type) + (1 | school) + (1 | school:class)")


def _model(mi, cluster, variables: dict, mode: str, formula: str):
    """``mode`` "joint": the joint model of every variable given x; "substantive": the score as
    the outcome of ``formula``, the others in the joint model; "without": that joint model
    alone (the two differ by the component)."""
    if mode != "joint":
        variables = {k: v for k, v in variables.items() if k != "score"}
    return mi.ImputationModel(cluster=cluster, variables=variables, covariates=["x"],
                              substantive=formula if mode == "substantive" else None)


def crossed(rng, N: int = 100_000, A: int = 1000, B: int = 500, mode: str = "joint") -> tuple[pd.DataFrame, object]:
    import mlimpute as mi

    a = rng.integers(0, A, N)
    b = rng.integers(0, B, N)
    ua = rng.normal(0, 0.5, A)
    ub = rng.normal(0, 0.4, B)
    x = rng.normal(size=N)
    df = pd.DataFrame({"primary": a, "secondary": b, "x": x,
                       "score": 0.5 * x + ua[a] + ub[b] + rng.normal(size=N),
                       "fsm": (0.3 * x + ua[a] + rng.normal(size=N) > 0).astype(float),
                       "p": (rng.normal(size=A) + ua)[a]})
    for c in ["score", "fsm"]:
        df.loc[rng.random(N) < 0.2, c] = np.nan
    df.loc[np.isin(a, rng.choice(A, A // 5, replace=False)), "p"] = np.nan
    variables = {"score": "continuous", "fsm": "binary", "p": mi.Variable("continuous", level="primary")}
    return df, _model(mi, mi.Crossed("primary", "secondary"), variables, mode,
                      "score ~ x + fsm + p + (1 | primary) + (1 | secondary)")


def worker(case: str, size: int, sweeps: int, mode: str = "joint") -> dict:
    import tracemalloc

    from mlimpute.impute import prepare
    from mlimpute.sampler import initial_state, prepare_static, sweep

    rng = np.random.default_rng(1)
    small, model = nested(rng, 20, mode=mode) if case == "nested" else crossed(rng, 2000, 50, 20, mode=mode)
    st = prepare_static(prepare(small, model))          # compile the kernels first
    sweep(rng, st, initial_state(st, rng))
    df, model = nested(rng, size, mode=mode) if case == "nested" else crossed(rng, mode=mode)
    data_mb = df.memory_usage(deep=True).sum() / 2**20
    tracemalloc.start()
    st = prepare_static(prepare(df, model))
    peak = []

    def read_peak():
        peak.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()

    wall_ms, cpu_ms = timed_sweeps(rng, st, sweeps, 3, read_peak)
    return {"rows": len(df), "wall_ms": wall_ms, "cpu_ms": cpu_ms, "mem_ratio": peak[0] / data_mb,
            "data_mb": data_mb}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=["nested", "crossed", "both"], default="both")
    ap.add_argument("--schools", type=int, default=3000, help="nested: schools (10 classes of 20 pupils each)")
    ap.add_argument("--sweeps", type=int, default=5)
    ap.add_argument("--substantive", action="store_true",
                    help="each case also with the score as a substantive model's outcome (module notes)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.sweeps, args.worker[2])))
        return
    targets = {"nested": 300.0, "crossed": 100.0}
    modes = ["without", "substantive"] if args.substantive else ["joint"]
    print(f"{'case':>8} {'model':>12} {'rows':>9} {'ms/sweep':>9} {'(cpu)':>8} {'target':>7} {'mem x data':>10} "
          f"{'data MB':>8}")
    for case in (["nested", "crossed"] if args.case == "both" else [args.case]):
        cpu = {}
        for mode in modes:
            proc = subprocess.run([sys.executable, __file__, "--sweeps", str(args.sweeps), "--worker", case,
                                   str(args.schools), mode], capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            cpu[mode] = r["cpu_ms"]
            print(f"{case:>8} {mode:>12} {r['rows']:>9,} {r['wall_ms']:>9.1f} {r['cpu_ms']:>8.1f} "
                  f"{targets[case]:>7.0f} {r['mem_ratio']:>10.2f} {r['data_mb']:>8.1f}", flush=True)
        if args.substantive:
            print(f"{case:>8} {'ratio (cpu)':>12} {cpu['substantive'] / cpu['without']:>38.2f}", flush=True)


if __name__ == "__main__":
    main()
