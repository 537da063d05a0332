"""The ``mlimpute`` command without a flow run: bad input, ``validate`` and ``analyse``.

Bad configurations and data must exit with code 2 and one line on stderr, *before* Prefect
starts, and write nothing (no output folder, no Prefect home). Flow runs through the command
are tested in test_pipeline.py under the shared Prefect harness.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.cli import main
from mlimpute.io import read_parquet, write_parquet, write_imputations

ROOT = Path(__file__).resolve().parents[1]
EXAM = ROOT / "examples" / "exam_scores.parquet"
MITML = ROOT / "tests" / "fixtures" / "mitml"

CONFIG = ROOT / "tests" / "fixtures" / "pipeline" / "exam.toml"


@pytest.fixture
def workdir(tmp_path, monkeypatch, cli_env):
    """A folder with the data and a config; Prefect's home pointed inside it (must stay absent)."""
    shutil.copy(EXAM, tmp_path / "exam.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def write_config(d: Path, data: str = "exam.parquet", out: str = "out", edit=lambda t: t) -> Path:
    text = CONFIG.read_text().replace('path = "exam.parquet"', f'path = "{data}"')
    p = d / "run.toml"
    p.write_text(edit(text.replace('dir = "out"', f'dir = "{out}"')))
    return p


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def bad_type_data(d: Path) -> str:
    df = read_parquet(d / "exam.parquet")
    df["standlrt"] = df["standlrt"].map(lambda v: None if pd.isna(v) else f"{v:.3f} sd")  # text
    write_parquet(df, d / "typed.parquet")
    return "typed.parquet"


CASES = {
    "missing data file": (dict(data="nope.parquet"), r"data file '.*nope.parquet' does not exist; check the path"),
    "unknown column": (dict(edit=lambda t: t.replace('standlrt = "continuous"', 'standlrt2 = "continuous"')),
                       r"standlrt2"),
    "wrong type": ("typed", r"column 'standlrt' is declared continuous but holds non-numeric values"),
    "analysis column": (dict(edit=lambda t: t.replace("+ avslrt +", "+ avslrtt +")),
                        r"\[\[analysis\]\] 'exam': column 'avslrtt' of formula .* is not in the data; did you mean 'avslrt'\?"),
    "R's factor()": (dict(edit=lambda t: t.replace("+ avslrt +", "+ factor(schgend) +")),
                     r"\[\[analysis\]\] 'exam': column 'factor' of formula .* is not in the data; R's factor\(x\) is C\(x\)"),
    "R's offset()": (dict(edit=lambda t: t.replace("+ avslrt +", "+ offset(avslrt) +")),
                     r"\[\[analysis\]\] 'exam': column 'offset' .* offset\(\) terms are not supported"),
    "dispersion column": (dict(edit=lambda t: t.replace('dispersion = "~ sex"', 'dispersion = "~ sexx"')),
                          r"\[\[analysis\]\] 'sex-gap': column 'sexx' of formula .* or dispersion '~ sexx' is "
                          r"not in the data; did you mean 'sex'\?"),
    "analysis column with holes": (dict(edit=lambda t: t.replace('standlrt = "continuous"\n', "")),
                                   r"column 'standlrt' has 903 missing values but is not imputed"),
    "output under a file": ("file-out", r"\[output\] dir = '.*blocker/out' cannot be created: '.*blocker' is a file"),
    "analysis without random term": (dict(edit=lambda t: t.replace('"normexam ~ sex + (1 | school)"', '"normexam ~ sex"')),
                                     r"\[\[analysis\]\] 'sex-gap': formula 'normexam ~ sex' has no random term"),
    "analysis family": (dict(edit=lambda t: t.replace('formula = "normexam ~ sex + (1 | school)"',
                                                      'formula = "normexam ~ sex + (1 | school)"\nfamily = "binomial"')
                             .replace('dispersion = "~ sex"', '').replace('reml = false\n', '')),
                        r"\[\[analysis\]\] 'sex-gap': response 'normexam' has values other than 0 and 1"),
    "quadrature with a random slope": (dict(edit=lambda t: t.replace(
        'formula = "normexam ~ standlrt + sex + avslrt + (1 + standlrt | school)"\nreml = true',
        'formula = "I(normexam > 0) ~ standlrt + (1 + standlrt | school)"\nfamily = "binomial"\nnagq = 7')),
        r"\[\[analysis\]\] 'exam': nagq=7 \(adaptive Gauss-Hermite\) needs a single scalar random term"),
    "prior of the wrong size": (dict(edit=lambda t: t + '\n[model.prior_l2]\nscale = [[1.0, 0.0], [0.0, 1.0]]\n'),
                                r"level-2 prior scale is 2x2 but the level-2 covariance is \d+x\d+"),
    "bad key": (dict(edit=lambda t: t.replace("burn = 20", "burn = -1")),
                r"\[sampler\] burn = -1 should be greater than or equal to 1"),
    "analysis name twice": (dict(edit=lambda t: t.replace('name = "sex-gap"', 'name = "exam"')),
                            r"run.toml: analysis names \['exam'\] are used more than once"),
    "misspelt cluster": (dict(edit=lambda t: t.replace('cluster = "school"', 'cluster = "schol"')),
                         r"column\(s\) 'schol' \(in cluster\) not found in the data"),
    "mixed folder": ("folder", r"column 'standlrt' holds numbers in '.*a.parquet' but text in '.*b.parquet'"),
    "config is a folder": ("config-folder", r"config file '.*' is a folder; give the TOML file"),
    "no rows": ("empty", r"\[data\] path = '.*empty.csv' has no rows; check the file"),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_or_data_exit_2_one_line_nothing_written(workdir, capsys, command, case):
    how, message = CASES[case]
    if how == "typed":
        cfg = write_config(workdir, data=bad_type_data(workdir))
    elif how == "file-out":
        (workdir / "blocker").write_text("a file where a folder should be")
        cfg = write_config(workdir, out="blocker/out")
    elif how == "folder":   # a folder whose files disagree: 'n/a' text in a numeric column
        df = read_parquet(workdir / "exam.parquet")
        (workdir / "parts").mkdir()
        write_parquet(df.iloc[:2000], workdir / "parts" / "a.parquet")
        write_parquet(df.iloc[2000:].astype({"standlrt": str}), workdir / "parts" / "b.parquet")
        cfg = write_config(workdir, data="parts")
    elif how == "config-folder":
        cfg = workdir
    elif how == "empty":   # a header alone ("data has no rows", without the path, before)
        read_parquet(workdir / "exam.parquet").iloc[:0].to_csv(workdir / "empty.csv", index=False)
        cfg = write_config(workdir, data="empty.csv")
    else:
        cfg = write_config(workdir, **how)
    before = files(workdir)
    code, out, err = run_cli([command, str(cfg)], capsys)
    assert code == 2
    assert err.startswith("mlimpute: error: ") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err
    assert files(workdir) == before  # no output folder, no Prefect home, no temporary files
    assert out == ""


def test_serve_timezone_and_verbose_flags(workdir, capsys):
    """An unknown --timezone was found by Prefect after its server had started (exit 1, a
    pydantic traceback); validate and analyse said "rerun with -v" but had no -v."""
    cfg = write_config(workdir)
    before = files(workdir)
    for tz in ("Mars/Olympus", "posix/Europe/London"):   # a tzdata file, but not a name Prefect takes
        code, _, err = run_cli(["serve", str(cfg), "--cron", "0 2 * * *", "--timezone", tz], capsys)
        assert code == 2 and f"--timezone {tz!r} is not a known time zone" in err and err.count("\n") == 1
    assert files(workdir) == before
    assert run_cli(["validate", str(cfg), "-v"], capsys)[0] == 0


def test_read_only_output_parent_exit_2(workdir, capsys, monkeypatch):
    ro = workdir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: let the check see what a user would
        real = os.access
        monkeypatch.setattr("mlimpute.pipeline.checks.os.access",
                            lambda p, mode: False if Path(p) == ro else real(p, mode))
    try:
        code, _, err = run_cli(["run", str(write_config(workdir, out="ro/out"))], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and err.count("\n") == 1
    assert "[output] dir = " in err and "cannot be created ('" in err and "is not writable)" in err
    assert not (ro / "out").exists()


def test_missing_config_and_dask_runner_problems(workdir, capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    code, _, err = run_cli(["run", "nope.toml"], capsys)
    assert code == 2 and "config file 'nope.toml' does not exist" in err
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cfg = write_config(workdir, edit=lambda t: t + '[runner]\nkind = "dask"\naddress = "tcp://10.1.2.3:8786"\n')
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no API URL from anywhere
        code, _, err = run_cli(["validate", str(cfg)], capsys)
    assert code == 2 and "set PREFECT_API_URL" in err and err.count("\n") == 1
    with temporary_settings({PREFECT_API_URL: "http://scheduler-host:4200/api"}):
        assert run_cli(["validate", str(cfg)], capsys)[0] == 0  # a server the workers can reach
    import mlimpute.pipeline.checks as checks

    real = checks.importlib.util.find_spec
    monkeypatch.setattr(checks.importlib.util, "find_spec",
                        lambda name, *a: None if name == "prefect_dask" else real(name, *a))
    code, _, err = run_cli(["validate", str(cfg)], capsys)
    assert code == 2 and "pip install 'mlimpute[dask]'" in err


def test_validate_ok_summarises_without_writing(workdir, capsys):
    cfg = write_config(workdir)
    before = files(workdir)
    code, out, err = run_cli(["validate", str(cfg)], capsys)
    assert code == 0, err
    assert "OK. 4059 rows in 65 clusters" in out
    assert "normexam (856 missing), standlrt (903 missing), avslrt (774 missing)" in out
    assert files(workdir) == before


@pytest.mark.parametrize("form", ["csv", "hive folder"])
def test_validate_reads_csv_and_a_parquet_folder(workdir, capsys, form):
    df = read_parquet(workdir / "exam.parquet")
    if form == "csv":
        df.to_csv(workdir / "exam.csv", index=False)
        data = "exam.csv"
    else:  # hive-partitioned by sex: the key comes back as a column
        for sex, part in df.groupby("sex"):
            (workdir / "exam_parts" / f"sex={sex}").mkdir(parents=True)
            part.drop(columns="sex").to_parquet(workdir / "exam_parts" / f"sex={sex}" / "p.parquet")
        data = "exam_parts"
    code, out, err = run_cli(["validate", str(write_config(workdir, data=data))], capsys)
    assert code == 0, err
    assert "OK. 4059 rows in 65 clusters" in out
    assert "normexam (856 missing), standlrt (903 missing), avslrt (774 missing)" in out
    if form == "hive folder":   # an output folder inside it: the run would read its own outputs (helper 31)
        cfg = write_config(workdir, data=data)
        code, _, err = run_cli(["validate", str(cfg), "--out", str(workdir / "exam_parts" / "out")], capsys)
        assert code == 2 and "is inside the input folder [data] path" in err and err.count("\n") == 1


def test_a_folder_in_use_is_refused_before_prefect_starts(workdir, capsys):
    """A second run into a busy folder was refused only once Prefect had started (about 25 s),
    with exit 1 (helper 37): now at once, exit 2, nothing started."""
    from mlimpute.pipeline import store

    held = store.lock_output(workdir / "out")
    try:
        code, _, err = run_cli(["run", str(write_config(workdir))], capsys)
    finally:
        held.close()
    assert code == 2 and "is in use by another run (pid" in err and "starting Prefect" not in err


def test_output_folder_lock_and_an_input_replaced_during_a_run(tmp_path):
    """A second run into a folder in use is refused (two overlapping runs had left a manifest
    beside the other run's imputations); a task that read an input replaced since the run began
    fails before its result is cached (helper 31)."""
    from types import SimpleNamespace

    from mlimpute.io import file_sha256
    from mlimpute.pipeline import store

    first = store.lock_output(tmp_path)
    with pytest.raises(mi.SpecError, match=r"is in use by another run \(pid \d+\); wait for it"):
        store.lock_output(tmp_path)
    first.close()
    store.lock_output(tmp_path).close()   # free again
    import errno
    import fcntl

    def no_locks(fh, how):   # NFS without lockd: the run goes on, unguarded, rather than refused
        raise OSError(errno.ENOLCK, "No locks available")

    real = fcntl.flock
    fcntl.flock = no_locks
    try:
        store.lock_output(tmp_path).close()
    finally:
        fcntl.flock = real
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    cfg = SimpleNamespace(data=SimpleNamespace(path=data))
    sha = file_sha256(data)
    store.same_input(cfg, sha)
    data.write_text("a\n2\n")
    with pytest.raises(mi.DataError, match="changed during the run"):
        store.same_input(cfg, sha)
    data.unlink()   # it was "changed" to the hash of nothing (helper 37)
    with pytest.raises(mi.DataError, match=r"the input '.*d.csv' was moved or deleted during the run"):
        store.same_input(cfg, sha)


def test_analyse_command_pools_a_folder_of_imputations_like_mi_analyse(workdir, capsys):
    df = read_parquet(EXAM)
    model = mi.ImputationModel(cluster="school",
                               variables={"normexam": "continuous", "standlrt": "continuous",
                                          "avslrt": mi.Variable("continuous", level=2)},
                               covariates=["sex"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)  # a short run: plumbing only
        res = mi.impute(df, model, n_imputations=3, burn=20, between=2, chains=1, seed=3)
    write_imputations(res.data, workdir / "imps")
    formula = "normexam ~ standlrt + sex + (1 | school)"
    code, out, err = run_cli(["analyse", str(workdir / "imps"), "--formula", formula,
                              "--out", str(workdir / "pooled.csv")], capsys)
    assert code == 0, err
    assert "Pooled over m = 3 imputations" in out
    ours = pd.read_csv(workdir / "pooled.csv")
    ref = mi.analyse(res, formula).tidy()
    pd.testing.assert_frame_equal(ours, ref, check_exact=False, rtol=1e-12)
    vc = pd.read_csv(workdir / "pooled_varcomp.csv")
    np.testing.assert_allclose(vc["estimate"], mi.analyse(res, formula).varcomp()["estimate"], rtol=1e-12)
    # a fit warning that every imputation gives is said once, with its count, not once per fit:
    # an outcome centred within schools has a school variance of exactly 0 (a singular fit)
    centred = res.data.assign(y=lambda d: d.normexam - d.groupby(["imputation", "school"]).normexam.transform("mean"))
    write_imputations(centred, workdir / "centred")
    code, out, err = run_cli(["analyse", str(workdir / "centred"), "--formula", "y ~ 1 + (1 | school)"], capsys)
    assert code == 0, err
    singular = [line for line in err.splitlines() if "boundary (singular) fit for" in line]
    assert len(singular) == 1 and singular[0].startswith("mlimpute: warning: ConvergenceWarning:"), err
    assert singular[0].endswith("(3 times)")


def test_analyse_command_on_jomo_csv_equals_mitml(capsys, tmp_path):
    """jomo's long CSV (Imputation 0 = the original data is skipped) against mitml's pooling."""
    formula = "normexam ~ standlrt + sex + avslrt + (1 + standlrt | clus)"
    code, out, err = run_cli(["analyse", str(MITML / "jomo_exam_imputations.csv.gz"),
                              "--formula", formula, "--df-com", "inf",
                              "--out", str(tmp_path / "p.csv")], capsys)
    assert code == 0, err
    ours = pd.read_csv(tmp_path / "p.csv").set_index("term")
    ref = pd.read_csv(MITML / "pool_exam_estimates.csv")
    ref["term"] = ref["term"].replace({"(Intercept)": "Intercept", "sexgirl": "sex[T.girl]"})
    ref = ref.set_index("term")
    # 1e-4: lme4's and our optimiser stop at slightly different points of the same REML optimum
    np.testing.assert_allclose(ours.loc[ref.index, "estimate"], ref["Estimate"], rtol=1e-4)
    np.testing.assert_allclose(ours.loc[ref.index, "std_error"], ref["Std.Error"], rtol=1e-4)
    # FMI 1e-3: a ratio of between- to total variance, where the 1e-4 differences add up
    np.testing.assert_allclose(ours.loc[ref.index, "fmi"], ref["FMI"], rtol=1e-3)


def test_analyse_command_bad_input_exit_2(capsys, tmp_path):
    code, _, err = run_cli(["analyse", str(tmp_path / "none.parquet"), "--formula", "y ~ 1 + (1|g)"], capsys)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    write_parquet(pd.DataFrame({"y": [1.0, 2.0], "g": [1, 2]}), tmp_path / "t.parquet")
    code, _, err = run_cli(["analyse", str(tmp_path / "t.parquet"), "--formula", "y ~ 1 + (1|g)"], capsys)
    assert code == 2 and "has no imputation column" in err
    # options that do not apply were ignored; a folder as --out became a file of that name
    t = str(tmp_path / "t.parquet")
    code, _, err = run_cli(["analyse", t, "--formula", "y ~ 1 + (1|g)", "--link", "probit"], capsys)
    assert code == 2 and "--link applies to --family binomial or poisson" in err
    code, _, err = run_cli(["analyse", t, "--formula", "y ~ 1 + (1|g)", "--nagq", "5"], capsys)
    assert code == 2 and "--nagq applies to --family binomial or poisson" in err
    code, _, err = run_cli(["analyse", t, "--formula", "y ~ 1 + (1|g)", "--out", str(tmp_path) + "/"], capsys)
    assert code == 2 and "is a folder; give the CSV file to write" in err
    with pytest.raises(mi.SpecError, match=r"reml='no' must be True \(REML\) or False \(ML\)"):
        mi.lmm("y ~ 1 + (1 | g)", pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "g": [1, 1, 2, 2]}), reml="no")


def test_analyse_command_names_the_imputation_whose_fit_failed(capsys, tmp_path):
    """The error of a fit that fails in one imputation carries a note naming it; the command
    printed the message alone (helper 25), which told the user to drop a term that is fine in
    the other imputations."""
    rng = np.random.default_rng(4)
    rows = []
    for k in (1, 2, 3):
        x = np.ones(40) if k == 2 else rng.normal(size=40)   # imputation 2's x is constant
        rows.append(pd.DataFrame({"imputation": k, "y": rng.normal(size=40), "x": x, "g": np.arange(40) % 8}))
    write_parquet(pd.concat(rows), tmp_path / "imp.parquet")
    code, _, err = run_cli(["analyse", str(tmp_path / "imp.parquet"), "--formula", "y ~ x + (1 | g)"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "'x' is a combination of 'Intercept'" in err and "on imputation 2" in err


def test_module_entry_point_runs_validate(workdir):
    import subprocess

    cfg = write_config(workdir)
    proc = subprocess.run([sys.executable, "-m", "mlimpute.cli", "validate", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "OK." in proc.stdout


def test_validate_knows_nested_and_membership_structures(workdir, capsys):
    """ExamScores with made-up classes (3 per school) and a made-up second school per pupil."""
    df = read_parquet(workdir / "exam.parquet")
    df["class"] = df["student"] % 3
    df["school2"] = np.where(df["student"] % 4 == 0, (df["school"] % 65) + 1, np.nan)
    df["w1"] = np.where(df["school2"].notna(), 0.6, 1.0)
    df["w2"] = np.where(df["school2"].notna(), 0.4, np.nan)
    df.to_parquet(workdir / "classes.parquet")
    nested = write_config(workdir, data="classes.parquet", edit=lambda t: t.replace(
        'cluster = "school"', 'cluster = ["school", "class"]').replace("level = 2", 'level = "school"'))
    code, out, err = run_cli(["validate", str(nested)], capsys)
    assert code == 0, err
    n_classes = df.groupby(["school", "class"]).ngroups
    assert f"OK. 4059 rows in 65 school × {n_classes} class clusters" in out
    mm = write_config(workdir, data="classes.parquet", edit=lambda t: t.replace(
        'cluster = "school"', 'cluster = { membership = ["school", "school2"], weights = ["w1", "w2"], name = "schools" }')
        .replace('avslrt = { kind = "continuous", level = 2 }\n', "").replace(" + avslrt", ""))
    code, out, err = run_cli(["validate", str(mm)], capsys)
    assert code == 0, err
    assert "65 schools clusters" in out
    bad = write_config(workdir, data="classes.parquet", edit=lambda t: t.replace(
        'cluster = "school"', 'cluster = { membership = ["school", "school2"], weights = ["w1", "w1"] }'))
    code, out, err = run_cli(["validate", str(bad)], capsys)
    assert code == 2 and "mlimpute: error:" in err and "w1" in err
    # class ids 0-2 repeat in every school: an analysis grouped by class alone would pool 3
    # "classes" where the imputation has one per school and class (as substantive= is refused)
    pooled = write_config(workdir, data="classes.parquet", edit=lambda t: t.replace(
        'cluster = "school"', 'cluster = ["school", "class"]').replace("level = 2", 'level = "school"')
        .replace('"normexam ~ sex + (1 | school)"', '"normexam ~ sex + (1 | school) + (1 | class)"'))
    code, out, err = run_cli(["validate", str(pooled)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("random term '(1 | class)' of [[analysis]] 'sex-gap' groups by 'class' alone, but 'class' = "
            in err and "Write the grouping as (1 | school:class)" in err)


# three imputations: FMI > 0.5 for standlrt is expected; the test checks the plumbing
@pytest.mark.filterwarnings("ignore:fraction of missing information:mlimpute.pooling.PoolingWarning")
def test_analyse_command_with_a_variance_function(capsys, tmp_path):
    data = pd.read_csv(MITML / "jomo_exam_imputations.csv.gz")
    data = data[data.Imputation <= 3]  # imputation 0 (the original data) is skipped
    data.to_csv(tmp_path / "imps.csv", index=False)
    formula = "normexam ~ standlrt + sex + (1 | clus)"
    code, out, err = run_cli(["analyse", str(tmp_path / "imps.csv"), "--formula", formula,
                              "--dispersion", "~ sex", "--out", str(tmp_path / "p.csv")], capsys)
    assert code == 0, err
    ref = mi.analyse(data, formula, dispersion="~ sex")
    vc = pd.read_csv(tmp_path / "p_varcomp.csv")
    row = vc[(vc.group == "Residual") & (vc.term1 == "sex[T.girl]")].iloc[0]
    want = ref.varcomp().set_index(["group", "term1"]).loc[("Residual", "sex[T.girl]")]
    assert row.method == "rubin_identity" and row.estimate == pytest.approx(want.estimate, rel=1e-12)
    code, _, err = run_cli(["analyse", str(tmp_path / "imps.csv"), "--formula", "sex ~ 1 + (1 | clus)",
                            "--family", "binomial", "--dispersion", "~ standlrt"], capsys)
    assert code == 2 and "--dispersion applies to --family gaussian" in err and err.count("\n") == 1
