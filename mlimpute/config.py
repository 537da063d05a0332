"""The pipeline's TOML configuration, validated (the ``mlimpute run`` / ``serve`` input).

A configuration file names the data, the imputation model (everything an
:class:`~mlimpute.ImputationModel` can say), the sampler's run length, the analyses to fit and
pool, the output folder and the task runner::

    [data]
    path = "exam_scores.parquet"          # relative paths: relative to this file's folder

    [model]
    cluster = "school"                    # or ["school", "class"] (nested, outermost first),
                                          # { crossed = ["primary", "secondary"] }, or
                                          # { membership = ["s1", "s2"], weights = ["w1", "w2"] }
    covariates = ["sex"]                  # also: level2_covariates, random_slopes, covariance
    [model.variables]
    normexam = "continuous"
    avslrt = { kind = "continuous", level = 2 }   # or level = "school" (a classification's name)
    score = { kind = "continuous", variance = "~ sex + (1 | school)" }   # a variance function
    fluent = { kind = "ordinal", categories = [1, 2, 3] }
    [model.prior_l2]                      # optional inverse-Wishart priors (prior_l1 too)
    df = 4
    # [model.priors.school]               # several classifications / variance functions: Ω^(c)'s
    # scale = [[0.05]]                    # prior, by classification (on the data's scale)
    # substantive = "normexam ~ standlrt + (1 + standlrt | school)"   # analysis-compatible
    # family = "gaussian"                 # or "binomial" (link = "logit" / "probit")

    [sampler]
    imputations = 10
    chains = 2
    burn = 500
    between = 50
    seed = 1

    [[analysis]]
    name = "exam"
    formula = "normexam ~ standlrt + sex + avslrt + (1 + standlrt | school)"
    family = "gaussian"                   # or binomial / poisson (then link, nagq)
    reml = true
    # dispersion = "~ sex"                # gaussian: log-linear residual variance (lmm's dispersion)

    [output]
    dir = "out"

    [runner]
    kind = "local"                        # or "dask" (address = "tcp://host:8786", workers = 4)

Every problem is reported as one :class:`~mlimpute.SpecError` line that names the file, the
key, the offending value and the fix. Checks that need the data live in ``mlimpute.pipeline.checks``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .analysis._dispersion import dispersion_columns
from .errors import SpecError
from .spec import CovariancePrior, Crossed, ImputationModel, Membership, Variable

__all__ = [
    "PipelineConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "parse_override",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(_Section):
    path: Path


class VariableConfig(_Section):
    kind: Literal["continuous", "binary", "ordinal", "nominal"]
    level: int | str = 1
    variance: str | None = None          # a variance function, e.g. "~ sex + (1 | school)"

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:  # 1, 2 or a classification's name (checked by the model)
        if (isinstance(v, int) and not isinstance(v, bool) and v in (1, 2)) or (isinstance(v, str) and v):
            return v
        raise ValueError("should be 1, 2 or the name of a classification (e.g. \"school\")")
    categories: list[Any] | None = None


class PriorConfig(_Section):
    scale: list[list[float]] | None = None
    df: float | None = Field(default=None, gt=0)

    @field_validator("scale", mode="before")
    @classmethod
    def _floats(cls, v: Any) -> Any:  # TOML writes 1 and 1.0 differently; both are numbers here
        if isinstance(v, list):
            return [[float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in row]
                    if isinstance(row, list) else row for row in v]
        return v

    @field_validator("df", mode="before")
    @classmethod
    def _df_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class CrossedConfig(_Section):
    crossed: list[str] = Field(min_length=2)


class MembershipConfig(_Section):
    membership: list[str] = Field(min_length=1)
    weights: list[str] = Field(min_length=1)
    name: str | None = None


def _r_family(v: Any) -> Any:
    """R's ``binomial(link = "probit")`` as a family value: what to write in the TOML table."""
    from .analysis._family import r_family_call

    if isinstance(v, str) and (call := r_family_call(v)) is not None:
        link = f' and link = "{call[1]}"' if call[1] else ""
        raise ValueError(f'R\'s {v} is written family = "{call[0]}"{link} here')
    return v


class ModelConfig(_Section):
    # "school"; ["school", "class"] (nested, outermost first); { crossed = [...] };
    # { membership = [...], weights = [...] }
    cluster: str | list[str] | CrossedConfig | MembershipConfig
    variables: dict[str, VariableConfig] = {}
    covariates: list[str] = []
    level2_covariates: list[str] = []
    random_slopes: list[str] = []
    covariance: Literal["common", "cluster"] = "common"
    prior_l1: PriorConfig | None = None
    prior_l2: PriorConfig | None = None
    substantive: str | None = Field(default=None, min_length=1)
    family: Literal["gaussian", "binomial"] = "gaussian"
    link: Literal["identity", "logit", "probit"] | None = None
    prior_substantive: PriorConfig | None = None
    categorical_prior_sd: float | None = Field(default=None, gt=0)
    standardize: bool = True
    priors: dict[str, PriorConfig] = {}

    _family = field_validator("family", mode="before")(classmethod(lambda cls, v: _r_family(v)))

    @model_validator(mode="after")
    def _something_to_impute(self) -> "ModelConfig":
        if not self.variables and self.substantive is None:
            raise ValueError("give the variables to impute under [model.variables] (or a substantive model)")
        return self

    @field_validator("variables", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:  # normexam = "continuous" means a level-1 variable
        if isinstance(v, Mapping):
            return {k: {"kind": x} if isinstance(x, str) else x for k, x in v.items()}
        return v

    def to_model(self) -> ImputationModel:
        """The :class:`~mlimpute.ImputationModel` this section describes."""
        variables = {
            name: Variable(v.kind, level=v.level,
                           categories=None if v.categories is None else tuple(v.categories),
                           variance=v.variance)
            for name, v in self.variables.items()
        }
        def prior(p: PriorConfig, table: str) -> CovariancePrior:
            try:
                return CovariancePrior(scale=None if p.scale is None else tuple(tuple(r) for r in p.scale), df=p.df)
            except SpecError as exc:   # say which table (the class does not know its name)
                raise SpecError(f"{table}: {exc}") from None

        priors: dict[str, Any] = {
            key: prior(p, key) for key, p in (("prior_l1", self.prior_l1), ("prior_l2", self.prior_l2),
                                                       ("prior_substantive", self.prior_substantive)) if p is not None
        }
        if self.priors:
            priors["priors"] = {name: prior(p, f"priors.{name}") for name, p in self.priors.items()}
        cluster: Any = self.cluster
        if isinstance(cluster, CrossedConfig):
            cluster = Crossed(*cluster.crossed)
        elif isinstance(cluster, MembershipConfig):
            cluster = Membership(tuple(cluster.membership), tuple(cluster.weights), name=cluster.name)
        return ImputationModel(
            cluster=cluster, variables=variables, covariates=self.covariates,
            level2_covariates=self.level2_covariates, random_slopes=self.random_slopes,
            covariance=self.covariance, substantive=self.substantive, family=self.family,
            categorical_prior_sd=self.categorical_prior_sd, standardize=self.standardize,
            link=self.link, **priors)


class SamplerConfig(_Section):
    imputations: int = Field(ge=2)  # pooling needs at least two
    burn: int = Field(ge=1)
    between: int = Field(ge=1)
    chains: int = Field(default=2, ge=1)
    seed: int = Field(ge=0)  # required: a scheduled run must be reproducible and resumable

    @model_validator(mode="after")
    def _chains_fit(self) -> "SamplerConfig":
        if self.chains > self.imputations:
            raise ValueError(
                f"chains = {self.chains} exceeds imputations = {self.imputations}: every chain "
                "gives at least one imputation; lower chains or raise imputations")
        return self


class AnalysisConfig(_Section):
    name: str
    formula: str = Field(min_length=3)
    family: Literal["gaussian", "binomial", "poisson"] = "gaussian"
    reml: bool | None = None  # gaussian only; default True there
    dispersion: str | None = None  # gaussian only: lmm's variance function, e.g. "~ sex"
    link: str | None = None  # binomial: logit/probit; poisson: log
    nagq: int | None = Field(default=None, ge=1)
    df_com: float | None = Field(default=None, gt=0)
    conf_level: float = Field(default=0.95, gt=0, lt=1)

    @field_validator("name")
    @classmethod
    def _file_name(cls, v: str) -> str:  # the name becomes a file name: keep it portable
        if not _NAME.match(v):
            raise ValueError(
                f"name {v!r} must start with a letter or digit and contain only letters, digits, "
                "'_', '-' and '.' (it names the output files)")
        return v

    @field_validator("df_com", "conf_level", mode="before")
    @classmethod
    def _to_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    _family = field_validator("family", mode="before")(classmethod(lambda cls, v: _r_family(v)))

    @model_validator(mode="after")
    def _family_options(self) -> "AnalysisConfig":
        if self.family == "gaussian":
            if self.link not in (None, "identity") or self.nagq is not None:
                raise ValueError("link and nagq apply to binomial/poisson analyses; remove them "
                                 "for family = \"gaussian\"")
        elif self.reml is not None or self.dispersion is not None:
            raise ValueError(f"{'reml' if self.reml is not None else 'dispersion'} applies to gaussian "
                             f"analyses only; remove it for family = \"{self.family}\"")
        if self.dispersion is not None:
            try:
                dispersion_columns(self.dispersion)  # the formula's syntax; its columns need the data
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return self

    def fit_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`mlimpute.analyse` / the fitter for this analysis."""
        if self.family == "gaussian":
            opts: dict[str, Any] = {"reml": True if self.reml is None else self.reml}
            if self.dispersion is not None:
                opts["dispersion"] = self.dispersion
            return opts
        opts: dict[str, Any] = {}
        if self.link is not None:
            opts["link"] = self.link
        if self.nagq is not None:
            opts["nagq"] = self.nagq
        return opts

    def pool_options(self) -> dict[str, Any]:
        return {"df_com": self.df_com, "conf_level": self.conf_level}


class OutputConfig(_Section):
    dir: Path


class RunnerConfig(_Section):
    kind: Literal["local", "dask"] = "local"
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None  # dask: scheduler of an existing cluster, e.g. tcp://host:8786

    @model_validator(mode="after")
    def _dask_only(self) -> "RunnerConfig":
        if self.address is not None and self.kind != "dask":
            raise ValueError('address applies to kind = "dask"; set kind = "dask" or remove address')
        if self.address is not None and self.workers is not None:
            raise ValueError("workers sizes a local Dask cluster; with address the cluster "
                             "already exists: remove workers")
        return self


class PipelineConfig(_Section):
    """A validated pipeline configuration; paths are absolute."""

    data: DataConfig
    model: ModelConfig
    sampler: SamplerConfig
    analysis: list[AnalysisConfig] = []
    output: OutputConfig
    runner: RunnerConfig = RunnerConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineConfig":
        names = [a.name for a in self.analysis]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"analysis names {dup} are used more than once; each names its "
                             "output files, so make them unique")
        clash = sorted(f"{a} and {b}" for a in names for b in names
                       for suffix in ("_varcomp", "_complete_case") if b == a + suffix)
        if clash:
            raise ValueError(f"analysis names {clash[0]} would write the same file (pooled/<name>_varcomp.csv, "
                             "pooled/<name>_complete_case.csv); rename one")
        return self

    def imputation_model(self) -> ImputationModel:
        return self.model.to_model()

    def record(self) -> dict[str, Any]:
        """A JSON-able dict of the whole configuration (paths as strings)."""
        return json.loads(self.model_dump_json())

    def chain_record(self) -> dict[str, Any]:
        """The part of the configuration that decides the imputations (model and sampler)."""
        rec = self.record()
        return {"model": rec["model"], "sampler": rec["sampler"]}


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a TOML configuration file.

    Parameters
    ----------
    path : path-like
        The TOML file. Relative paths inside it are relative to its folder.
    overrides : mapping, optional
        Dotted keys and values applied on top of the file, e.g. ``{"sampler.burn": 100,
        "output.dir": "/tmp/out"}``. Relative paths given here are relative to the current
        working directory.

    Raises
    ------
    SpecError
        The file is missing or not TOML, or any key is unknown, missing or invalid; one line
        naming the key and the fix.
    """
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"config file {str(p)!r} is a folder; give the TOML file (e.g. "
                        "examples/exam_scores.toml)")
    if not p.is_file():
        raise SpecError(f"config file {str(p)!r} does not exist; check the path")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: not valid TOML ({exc}); fix the syntax") from None
    if overrides:
        raw = apply_overrides(raw, {k: _absolute_if_path(k, v) for k, v in overrides.items()})
    return parse_config(raw, base=p.resolve().parent, source=str(p))


def parse_config(raw: Mapping[str, Any], base: str | os.PathLike = ".",
                 source: str = "config") -> PipelineConfig:
    """Validate a configuration given as a dict (as read from TOML)."""
    raw = _resolve_paths(dict(raw), Path(base))
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_describe(exc, raw)}") from None
    try:
        cfg.imputation_model()
    except SpecError as exc:
        raise SpecError(f"{source}: [model] {exc}") from None
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"sampler.burn=100"`` → ``("sampler.burn", 100)``; the value is read as TOML, else a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {text!r}: write KEY=VALUE, e.g. --set sampler.burn=100")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted-key ``overrides`` set (tables created as needed)."""
    out = json.loads(json.dumps(raw, default=str))
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"override {dotted!r}: {part!r} is not a table in the config")
            node = child
        node[parts[-1]] = value
    return out


_PATH_KEYS = (("data", "path"), ("output", "dir"))


def _absolute_if_path(key: str, value: Any) -> Any:
    if tuple(key.split(".")) in _PATH_KEYS and isinstance(value, (str, os.PathLike)):
        return str(Path(value).expanduser().resolve())
    return value


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths relative to the config file's folder become absolute (cron jobs run anywhere)."""
    for section, key in _PATH_KEYS:
        sec = raw.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            value = Path(sec[key]).expanduser()
            raw[section] = {**sec, key: value if value.is_absolute() else (base / value).resolve()}
    return raw


# ------------------------------------------------------------------------------------------
# Error messages: one line naming the key, the value and the fix
# ------------------------------------------------------------------------------------------
_FIELDS: dict[str, type[BaseModel]] = {
    "": PipelineConfig, "data": DataConfig, "model": ModelConfig, "sampler": SamplerConfig,
    "analysis": AnalysisConfig, "output": OutputConfig, "runner": RunnerConfig,
    "prior_l1": PriorConfig, "prior_l2": PriorConfig, "prior_substantive": PriorConfig,
    "variables": VariableConfig,
}


def _describe(exc: ValidationError, raw: Mapping[str, Any]) -> str:
    errors = exc.errors(include_url=False)
    parts = [_one(e, raw) for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _where(loc: tuple[Any, ...]) -> tuple[str, str]:
    """``("analysis", 0, "formula")`` → (``"[[analysis]] #1"``, ``"formula"``)."""
    table: list[str] = []
    key = ""
    array = False
    i = 0
    loc = tuple(x for x in loc if x not in ("function-after", "function-before"))
    while i < len(loc):
        part = loc[i]
        if isinstance(part, int):
            table[-1] = f"{table[-1]}]] #{part + 1}"
            array = True
        elif i == len(loc) - 1:
            key = str(part)
        else:
            table.append(str(part))
        i += 1
    if not table:
        return "", key
    name = ".".join(table)
    return (f"[[{name}" if array else f"[{name}]"), key


def _lookup(raw: Mapping[str, Any], loc: tuple[Any, ...]) -> tuple[bool, Any]:
    node: Any = raw
    for part in loc:
        if isinstance(node, str) and part == "kind":  # shorthand: name = "continuous"
            continue
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


# other tools' names for a key (jomo, mice, Stan): what to write instead, and why
KEY_ALIASES = {
    "thin": ("between", "the sweeps between two imputations, jomo's nbetween"),
    "nbetween": ("between", "jomo's nbetween"),
    "nburn": ("burn", "jomo's nburn"),
    "warmup": ("burn", "the sweeps before the first imputation"),
    "nimp": ("imputations", "the number of completed datasets, M"),
    "m": ("imputations", "the number of completed datasets, M"),
    "n_imputations": ("imputations", "the number of completed datasets, M"),
}


def _one(err: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    table, key = _where(loc)
    where = f"{table} {key}".strip() if key else (table or "the file")
    kind = err["type"]
    if kind == "missing":
        return f"{where} is required but missing; add it"
    if kind == "extra_forbidden":
        section = _section_model(loc[:-1])
        known = sorted(section.model_fields) if section else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        if str(loc[-1]) in KEY_ALIASES and KEY_ALIASES[str(loc[-1])][0] in known:
            ours, why = KEY_ALIASES[str(loc[-1])]
            hint = f"did you mean {ours!r} ({why})?"
        lower = {k.lower(): k for k in known}
        if str(loc[-1]) not in known and str(loc[-1]).lower() in lower:   # R's REML, nAGQ
            hint = f"did you mean {lower[str(loc[-1]).lower()]!r}? (keys are lowercase here)"
        return f"unknown key {where}; {hint}"
    found, value = _lookup(raw, loc)
    if found and isinstance(value, Mapping):  # an error about a whole table
        where = _where((*loc, "_"))[0]
    shown = f" = {_toml_repr(value)}" if found and key and not isinstance(value, Mapping) else ""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if msg.startswith("Input should"):  # pydantic's wording of the expectation
        return f"{where}{shown} {msg.removeprefix('Input ')}"
    return f"{where}{shown}: {msg}" if where else msg   # (a check of the whole file)


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    names = [str(p) for p in loc if not isinstance(p, int)]
    if not names:
        return PipelineConfig
    if len(names) >= 2 and names[-2] == "variables":
        return VariableConfig
    if len(names) >= 2 and names[-2] == "priors":
        return PriorConfig
    return _FIELDS.get(names[-1])


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    return json.dumps(value, default=str)
