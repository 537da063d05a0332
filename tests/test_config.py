"""The pipeline's TOML configuration: what it accepts, and one-line errors naming key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlimpute as mi
from mlimpute.config import apply_overrides, load_config, parse_config, parse_override

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "exam_scores.toml"

BASE = """
[data]
path = "data.parquet"
[model]
cluster = "school"
covariates = ["sex"]
[model.variables]
normexam = "continuous"
avslrt = { kind = "continuous", level = 2 }
[sampler]
imputations = 4
burn = 10
between = 2
seed = 3
[output]
dir = "out"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_config_builds_the_demo_model():
    cfg = load_config(EXAMPLE)
    model = cfg.imputation_model()
    assert model == mi.ImputationModel(
        cluster="school",
        variables={"standlrt": "continuous", "avslrt": mi.Variable("continuous", level=2)},
        covariates=["sex"], substantive="normexam ~ standlrt + sex + avslrt + (1 + standlrt | school)")
    assert cfg.data.path == EXAMPLE.parent / "exam_scores.parquet"  # relative to the file
    assert cfg.sampler.chains == 2 and cfg.sampler.seed == 1
    assert [a.name for a in cfg.analysis] == ["exam"]
    assert cfg.analysis[0].fit_options() == {"reml": True}
    assert cfg.runner.kind == "local"


def test_full_model_section_round_trips_to_imputation_model(tmp_path):
    text = BASE.replace('covariates = ["sex"]', """covariates = ["sex", "x"]
level2_covariates = ["schgend"]
random_slopes = ["x"]
covariance = "common"
substantive = "y ~ x * z + (1 + x | school)"
family = "binomial"
link = "probit"
standardize = false
[model.prior_l1]
scale = [[1, 0], [0, 2.5]]
df = 3
[model.prior_l2]
df = 5
[model.prior_substantive]
df = 4""").replace('normexam = "continuous"', """normexam = "continuous"
fluent = { kind = "ordinal", categories = [1, 2, 3] }""")
    text += """
[[analysis]]
name = "logit"
formula = "y ~ x + (1 | school)"
family = "binomial"
link = "probit"
nagq = 5
df_com = 100
"""
    cfg = load_config(write(tmp_path, text))
    m = cfg.imputation_model()
    assert m.variables["fluent"] == mi.Variable("ordinal", categories=(1, 2, 3))
    assert m.level2_covariates == ("schgend",) and m.random_slopes == ("x",)
    assert m.prior_l1 == mi.CovariancePrior(scale=((1.0, 0.0), (0.0, 2.5)), df=3.0)
    assert m.prior_l2 == mi.CovariancePrior(df=5.0)
    assert (m.substantive, m.family, m.link) == ("y ~ x * z + (1 + x | school)", "binomial", "probit")
    assert m.prior_substantive == mi.CovariancePrior(df=4.0)
    assert m.standardize is False and cfg.imputation_model().standardize is False
    assert load_config(write(tmp_path, BASE)).imputation_model().standardize is True
    a = cfg.analysis[0]
    assert a.fit_options() == {"link": "probit", "nagq": 5}
    hetero = load_config(write(tmp_path, text + '[[analysis]]\nname = "h"\nformula = "y ~ x + (1 | school)"\n'
                                             'dispersion = "~ sex"\n')).analysis[1]
    assert hetero.fit_options() == {"reml": True, "dispersion": "~ sex"}
    assert a.pool_options() == {"df_com": 100.0, "conf_level": 0.95}
    # the record is JSON and parses back to the same configuration (tasks receive records)
    assert parse_config(cfg.record()) == cfg


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[model.variables]", "[model.prior_l1]\ndf = 4\n[model.variables]")
     .replace('cluster = "school"', 'cluster = ["school", "class"]') + "\n[model.priors.school]\nscale = [[-1.0]]\n",
     r"\[model\] priors.school: prior scale must be positive definite"),
    (lambda t: t.replace("burn = 10", "burn = \"many\""),
     r"\[sampler\] burn = \"many\" should be a valid integer"),
    (lambda t: t.replace("burn = 10", "burnin = 10"),
     r"\[sampler\] burn is required but missing; add it; unknown key \[sampler\] burnin; did you mean 'burn'\?"),
    (lambda t: t.replace("between = ", "thin = "),   # jomo's and Stan's names (helper 32: 'chains'?)
     r"unknown key \[sampler\] thin; did you mean 'between' \(the sweeps between two imputations, jomo's nbetween\)\?"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\nREML = false\n',   # R's spelling
     r"unknown key \[\[analysis\]\] #1 REML; did you mean 'reml'\? \(keys are lowercase here\)"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\nfamily = "binomial(link = \'probit\')"\n',
     r"\[\[analysis\]\] #1 family = .*R's binomial\(link = 'probit'\) is written family = \"binomial\" and link = \"probit\" here"),
    (lambda t: t.replace('"continuous", level = 2', '"continuous", level = 3'),
     r"\[model.variables.avslrt\] level = 3: should be 1, 2 or the name of a classification"),
    (lambda t: t.replace('normexam = "continuous"', 'normexam = "continous"'),
     r"\[model.variables.normexam\] kind = \"continous\" should be 'continuous', 'binary'"),
    (lambda t: t.replace("imputations = 4", "imputations = 4\nchains = 5"),
     r"\[sampler\]: chains = 5 exceeds imputations = 4.*lower chains or raise imputations"),
    (lambda t: t.replace("seed = 3", ""),
     r"\[sampler\] seed is required but missing; add it"),
    (lambda t: t.replace('[output]\ndir = "out"', ""),
     r"output is required but missing"),
    (lambda t: t + '[[analysis]]\nname = "a b"\nformula = "y ~ 1 + (1|g)"\n',
     r"\[\[analysis\]\] #1 name = \"a b\": name 'a b' must start with a letter"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\nfamily = "gaussian"\nnagq = 3\n',
     r"\[\[analysis\]\] #1: link and nagq apply to binomial/poisson"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\nfamily = "binomial"\ndispersion = "~ x"\n',
     r"\[\[analysis\]\] #1: dispersion applies to gaussian analyses only; remove it"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\ndispersion = "y ~ x"\n',
     r"\[\[analysis\]\] #1: dispersion 'y ~ x' has a left-hand side 'y'.*one-sided, like '~ sex'"),
    (lambda t: t + '[runner]\nkind = "dask"\naddress = "tcp://h:8786"\nworkers = 2\n',
     r"\[runner\]: workers sizes a local Dask cluster; .*remove workers"),
    (lambda t: t + '[runner]\nkind = "spark"\n',
     r"\[runner\] kind = \"spark\" should be 'local' or 'dask'"),
    (lambda t: t.replace('covariates = ["sex"]', 'covariates = ["sex"]\nrandom_slopes = ["x"]'),
     r"\[model\] random slope 'x' is not among the level-1 covariates"),
    (lambda t: t + '[[analysis]]\nname = "a"\nformula = "y ~ 1 + (1|g)"\n[[analysis]]\nname = "a_varcomp"\n'
                   'formula = "y ~ 1 + (1|g)"\n',   # pooled/a_varcomp.csv was overwritten silently
     r"analysis names a and a_varcomp would write the same file"),
])
def test_bad_config_one_line_naming_key_and_fix(tmp_path, edit, message):
    p = write(tmp_path, edit(BASE))
    with pytest.raises(mi.SpecError, match=message) as info:
        load_config(p)
    text = str(info.value)
    assert text.startswith(str(p)) and "\n" not in text


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(mi.SpecError, match=r"c.toml: not valid TOML .*line 1.*; fix the syntax"):
        load_config(write(tmp_path, "[data\npath = 1"))
    with pytest.raises(mi.SpecError, match=r"config file .*nope.toml' does not exist; check the path"):
        load_config(tmp_path / "nope.toml")


def test_overrides_apply_on_top_and_resolve_paths_against_cwd(tmp_path, monkeypatch):
    p = write(tmp_path, BASE)
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_config(p, {"sampler.burn": 99, "output.dir": "elsewhere"})
    assert cfg.sampler.burn == 99
    assert cfg.output.dir == tmp_path.parent / "elsewhere"
    assert cfg.data.path == tmp_path / "data.parquet"
    assert parse_override("sampler.burn=100") == ("sampler.burn", 100)
    assert parse_override("runner.kind=dask") == ("runner.kind", "dask")
    assert parse_override('model.covariates=["sex", "x"]') == ("model.covariates", ["sex", "x"])
    with pytest.raises(mi.SpecError, match="write KEY=VALUE"):
        parse_override("sampler.burn")
    with pytest.raises(mi.SpecError, match="'seed' is not a table"):
        apply_overrides({"sampler": {"seed": 1}}, {"sampler.seed.x": 2})


@pytest.mark.parametrize("cluster, levels, expected", [
    ('["school", "class"]', 'c = { kind = "continuous", level = "class" }',
     lambda: mi.ImputationModel(cluster=["school", "class"], variables={"normexam": "continuous",
                                "c": mi.Variable("continuous", level="class")}, covariates=["sex"])),
    ('{ crossed = ["primary", "secondary"] }', 'p = { kind = "binary", level = "primary" }',
     lambda: mi.ImputationModel(cluster=mi.Crossed("primary", "secondary"),
                                variables={"normexam": "continuous", "p": mi.Variable("binary", level="primary")},
                                covariates=["sex"])),
    ('["school", "class"]', 'c = { kind = "continuous", level = "class" }\n[model.priors.class]\n'
     'scale = [[0.1, 0], [0, 0.2]]\ndf = 3\n[model.priors.school]\ndf = 4',
     lambda: mi.ImputationModel(cluster=["school", "class"], variables={"normexam": "continuous",
                                "c": mi.Variable("continuous", level="class")}, covariates=["sex"],
                                priors={"class": mi.CovariancePrior(scale=((0.1, 0.0), (0.0, 0.2)), df=3),
                                        "school": mi.CovariancePrior(df=4)})),
    ('{ membership = ["s1", "s2"], weights = ["w1", "w2"], name = "school" }', "",
     lambda: mi.ImputationModel(cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"),
                                variables={"normexam": "continuous"}, covariates=["sex"])),
])
def test_cluster_structures_in_toml(tmp_path, cluster, levels, expected):
    text = BASE.replace('cluster = "school"', f"cluster = {cluster}")
    text = text.replace('avslrt = { kind = "continuous", level = 2 }', levels)
    assert load_config(write(tmp_path, text)).imputation_model() == expected()
