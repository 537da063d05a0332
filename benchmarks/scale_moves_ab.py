"""What the categorical latents' scale moves (``mlimpute/sampler/expansion.py``) or, with
``--toggle collapsed``, the rare categories' collapsed moves (``collapsed.py``) buy: long
single chains with the moves and without, side by side, on JSPmiss (fluent as ordinal and as
nominal; the two-level sampler), on a three-level design (the general sampler), a two-level
design with categorical variables at both levels and a three-level design with binary, ordinal
and nominal variables of the classes (``tests/test_expansion.py``'s), and a three-level design
with rare binary and nominal pupil variables (``three-rare``, ``tests/test_collapsed.py``'s), and
a two-level design with rare categories at both levels (``level2-rare``: a binary pupil
variable, a binary and an ordinal school variable, ``tests/test_collapsed.py``'s ``_rare2``;
``level2-one``: its rare binary school variable alone, with y and a continuous w) and
a three-level one with rare categories of class and school variables (``class-rare``, its
``_class_rare``: the general sampler's classification-level block).

    python benchmarks/scale_moves_ab.py                     # seeds 1-6 on JSPmiss, 1-3 the others
    python benchmarks/scale_moves_ab.py --seeds 1 2 --sweeps 5000 --designs ordinal
    python benchmarks/scale_moves_ab.py --designs class-level --seeds 1 2 --variables cb co ch sb
    python benchmarks/scale_moves_ab.py --toggle collapsed --designs nominal ordinal --sweeps 10000
    python benchmarks/scale_moves_ab.py --toggle collapsed --designs level2-rare --variables wb wo b

Each run: one chain of 500 burn-in sweeps then ``--sweeps`` monitored ones (same seed with and
without the moves). Prints the smallest bulk ESS per 1,000 sweeps over all monitored parameters
(naming it), the CPU seconds and the smallest ESS per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))   # the designs come from the tests, which import _stats

import mlimpute as mi  # noqa: E402
from mlimpute.diagnostics import ess_bulk  # noqa: E402
from mlimpute.impute import prepare, run_chain  # noqa: E402
from mlimpute.sampler import collapsed, expansion  # noqa: E402
from mlimpute.sampler.sweep import trace_names  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "JSPmiss.csv"


def _jsp(kind: str):
    model = mi.ImputationModel(cluster="school", covariates=["sex", "behaviour"],
                               variables={"ravens": "continuous", "english": "continuous", "fluent": kind})
    return prepare(pd.read_csv(DATA), model)


def _three_level():
    from tests.test_expansion import THREE, _three_level
    return prepare(_three_level(11, S=60, C=4, n=8), mi.ImputationModel(**THREE))


def _class_level():
    from tests.test_expansion import CLASS_LEVEL, _class_level
    return prepare(_class_level(13, S=60, C=5, n=6), mi.ImputationModel(**CLASS_LEVEL))


def _three_rare():
    from tests.test_collapsed import THREE_RARE, _three_rare
    return prepare(_three_rare(14, S=40, C=3, n=8), mi.ImputationModel(**THREE_RARE))


def _level2_rare():
    from tests.test_collapsed import RARE2, _rare2
    return prepare(_rare2(15, J=150, n=8), mi.ImputationModel(**RARE2))


def _level2_one():
    from tests.test_collapsed import _rare2
    model = mi.ImputationModel(cluster="g", covariates=["x"], variables={
        "y": "continuous", "wb": mi.Variable("binary", level=2), "w": mi.Variable("continuous", level=2)})
    return prepare(_rare2(17, J=200, n=10).drop(columns=["b", "wo"]), model)


def _class_rare():
    from tests.test_collapsed import CLASS_RARE, _class_rare
    return prepare(_class_rare(16, S=80, C=4, n=5), mi.ImputationModel(**CLASS_RARE))


def _both_levels():
    from tests.test_expansion import MODEL, _data
    return prepare(_data(21, J=100, n=10), mi.ImputationModel(**MODEL))


DESIGNS = {"ordinal": lambda: _jsp("ordinal"), "nominal": lambda: _jsp("nominal"),
           "three-level": _three_level, "both-levels": _both_levels, "class-level": _class_level,
           "three-rare": _three_rare, "level2-rare": _level2_rare, "level2-one": _level2_one,
           "class-rare": _class_rare}


def _run(data, seed: int, sweeps: int, on: bool, variables=(), toggle=expansion) -> str:
    toggle.ENABLED = on
    names = trace_names(data)
    t = time.process_time()
    r = run_chain(data, 0, 1, 500, sweeps, np.random.SeedSequence(seed))
    sec = time.process_time() - t
    e = np.array([ess_bulk(r.trace[None, :, k]) for k in range(len(names))]) * 1000 / sweeps
    by_var = "".join(f", {v} {min(e[k] for k, n in enumerate(names) if v in n):.1f}" for v in variables
                     if any(v in n for n in names))
    return (f"{'with' if on else 'without'}: smallest {e.min():5.1f} per 1,000 ({names[e.argmin()]}), "
            f"{sec:4.1f} s, {e.min() * sweeps / 1000 / sec:6.1f} ESS/s{by_var}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--sweeps", type=int)
    ap.add_argument("--toggle", choices=["expansion", "collapsed"], default="expansion",
                    help="the moves switched on and off: the latents' scale moves or the rare categories' "
                         "collapsed moves")
    ap.add_argument("--variables", nargs="*", default=[],
                    help="also the smallest ESS per 1,000 of the parameters naming each of these")
    a = ap.parse_args(argv)
    toggle = {"expansion": expansion, "collapsed": collapsed}[a.toggle]
    for design in a.designs:
        data = DESIGNS[design]()
        jsp = design in ("ordinal", "nominal")
        seeds = a.seeds or ([1, 2, 3, 4, 5, 6] if jsp else [1, 2, 3])
        sweeps = a.sweeps or (20000 if jsp else 10000)
        for seed in seeds:
            print(f"{design} seed {seed}: " + " | ".join(_run(data, seed, sweeps, on, a.variables, toggle) for on in (True, False)),
                  flush=True)
    toggle.ENABLED = True


if __name__ == "__main__":
    main()
