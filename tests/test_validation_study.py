"""The validation study's small cell (benchmarks/study_validation.py; the whole grid and its
table are in docs/validation.md): its designs have the stated missingness, a few replications
run through imputation, analysis and pooling, and the summary, table and plot are written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

study = pytest.importorskip("study_validation")


@pytest.mark.parametrize("design", ["J100-n25-icc0.3-r40-MAR-cont", "J100-n25-icc0.1-r20-MCAR-bin"])
def test_designs_have_the_stated_missingness(design):
    c = study.parse(design)
    rates = []
    for rep in range(3):
        data, full = study.simulate(design, np.random.default_rng(rep))
        assert len(data) == c["J"] * c["n"] and data["g"].nunique() == c["J"]
        assert data[["y", "w", "g"]].notna().all().all() and full.notna().all().all()
        obs = data["x"].notna()
        assert np.array_equal(data.loc[obs, "x"], full.loc[obs, "x"])
        rates.append(1 - obs.mean())
        if c["kind"] == "bin":
            assert set(full["x"].unique()) <= {0.0, 1.0}
        if c["mech"] == "MAR":   # more holes where y is high
            hi = full["y"] > full["y"].median()
            assert (~obs[hi]).mean() > (~obs[~hi]).mean() + 0.1
    assert np.mean(rates) == pytest.approx(c["rate"], abs=0.03)


def test_small_cell_runs_and_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "OUT_PNG", tmp_path / "coverage.png")
    design = "J30-n5-icc0.3-r20-MAR-cont"
    rows = []
    for rep in range(3):
        rows += study.replicate((design, rep, ["full", "cc", "mi"]))
    done = pd.DataFrame(rows, columns=["design", "method", "rep", "parameter", "estimate", "conf_low", "conf_high"])
    assert set(done["method"]) == {"full", "cc", "mi"}
    mi_x = done[(done["method"] == "mi") & (done["parameter"] == "x")]
    assert len(mi_x) == 3 and (mi_x["conf_low"] < mi_x["estimate"]).all() and (mi_x["estimate"] < mi_x["conf_high"]).all()
    # three replications of 150 units: the pooled slope within 5 of its SEs (about 0.06) of 0.5
    assert abs(mi_x["estimate"].mean() - 0.5) < 0.3
    text, summary = study._render(done)
    assert "## x (truth 0.5)" in text and design in text and "| mi rel. bias % |" in text
    assert (tmp_path / "coverage.png").stat().st_size > 1000
    row = summary[(summary["method"] == "mi") & (summary["parameter"] == "var(Intercept)")].iloc[0]
    assert row["truth"] == 0.3 and row["reps"] == 3
