"""Checks of a configuration against its data and its machine, before any sampling.

``mlimpute validate`` and ``mlimpute run`` call :func:`check_all` before Prefect starts, so a
bad configuration costs a second, not the API's start-up, and leaves nothing on disk; the
flow's ``validate`` task calls :func:`check_data` again on the data it actually reads (a
scheduled run meets whatever file is there that night). No Prefect in this module.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from mlimpute.analysis._design import r_call_hint
from mlimpute.config import AnalysisConfig, PipelineConfig
from mlimpute.errors import DataError, SpecError

from . import store

__all__ = ["check_all", "check_data", "check_output_dir", "check_output_outside_input", "check_runner",
           "analysis_columns", "membership_columns"]


def check_all(cfg: PipelineConfig, api_url: str | None = None) -> dict[str, Any]:
    """Every check: data against model and analyses, output folder, runner. Returns a summary."""
    check_output_outside_input(cfg)
    summary = check_data(cfg)
    check_output_dir(cfg.output.dir)
    check_runner(cfg, api_url)
    return summary


def check_data(cfg: PipelineConfig) -> dict[str, Any]:
    """Validate the model and the analyses against the data; a small JSON-able summary.

    Raises
    ------
    DataError
        Missing or unreadable file, unknown columns, wrong types or values (from
        :func:`mlimpute.impute.prepare`), or an analysis column with holes that the model
        does not impute.
    """
    df = store.read_input(cfg.data.path)
    data = store.model_data(cfg)  # every check of the model against the data
    model = data.model
    imputed = [*model.variables, *([model.outcome] if model.substantive is not None else [])]
    for a in cfg.analysis:
        _check_analysis(a, df, imputed, model)
    missing = {name: int(df[name].isna().sum()) for name in imputed}
    return {
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        # one cluster column: the number of clusters; several classifications: units per name
        "clusters": (int(len(data.sizes)) if not data.classes else
                     {c.name: units[c.name] for units in [{cd.name: cd.n_units for cd in data.classes}]
                      for c in model.classifications}),   # in the model's order (the sampler's may differ)
        "missing": missing,
    }


def describe_clusters(clusters) -> str:
    """``check_data``'s cluster count as words: "65" or "65 school × 194 class"."""
    if isinstance(clusters, dict):
        return " × ".join(f"{n} {name}" for name, n in clusters.items())
    return str(clusters)


def analysis_columns(a: AnalysisConfig, columns=()) -> set[str]:
    """The data columns an analysis reads (response, fixed part, random terms, dispersion);
    ``columns``, the data's, also finds the arguments of stateful transforms (scale(z))."""
    from mlimpute.analysis._design import formula_columns
    from mlimpute.analysis._dispersion import dispersion_columns
    from mlimpute.analysis.formula import parse_formula

    parsed = parse_formula(a.formula)
    parts = [("response", parsed.response), ("fixed part", parsed.fixed)]
    parts += [(f"random term {t.text}", t.expr) for t in parsed.random]
    cols = {c for t in parsed.random for c in t.columns}
    for what, rhs in parts:
        try:
            cols |= formula_columns(rhs, what, columns)
        except SpecError as exc:
            raise SpecError(f"[[analysis]] {a.name!r}: {exc} (formula {a.formula!r})") from None
    if a.dispersion is not None:
        cols |= dispersion_columns(a.dispersion)
    return cols


def membership_columns(a: AnalysisConfig) -> set[str]:
    """The id and weight columns of the formula's ``mm( … )`` terms: missing where a unit has fewer
    memberships, by design (not missing data)."""
    from mlimpute.analysis.formula import parse_formula

    return {c for t in parse_formula(a.formula).random if t.membership is not None for c in t.columns}


def _check_analysis(a: AnalysisConfig, df: pd.DataFrame, imputed: Any, model: Any = None) -> None:
    columns = [str(c) for c in df.columns]
    try:
        used = analysis_columns(a, df.columns)
    except SpecError as exc:
        prefix = f"[[analysis]] {a.name!r}: "
        raise SpecError(str(exc) if str(exc).startswith(prefix) else prefix + str(exc)) from None
    for col in sorted(used):
        if col not in df.columns:
            close = difflib.get_close_matches(col, columns, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the data have {', '.join(columns)}"
            hint = r_call_hint(col, a.formula) or hint
            where = f"formula {a.formula!r}" + ("" if a.dispersion is None else f" or dispersion {a.dispersion!r}")
            raise DataError(f"[[analysis]] {a.name!r}: column {col!r} of {where} is "
                            f"not in the data; {hint} Fix the formula or the data")
        holes = int(df[col].isna().sum())
        if holes and col not in imputed and col not in membership_columns(a):
            raise DataError(
                f"[[analysis]] {a.name!r}: column {col!r} has {holes} missing values but is not "
                "imputed, so every completed dataset would still have holes; add it to "
                "[model.variables] (or make it the outcome of [model] substantive) or drop it "
                "from the formula")
    _dry_design(a, df, imputed, model)
    from mlimpute.analysis.formula import parse_formula
    from mlimpute.substantive import check_nested_grouping

    for term in parse_formula(a.formula).random if model is not None else ():   # (1 | class) where
        check_nested_grouping(df, model, term, f"[[analysis]] {a.name!r}")        # class ids repeat across schools


def _dry_design(a: AnalysisConfig, df: pd.DataFrame, imputed: Any, model: Any = None) -> None:
    """The analysis's design built (not fitted) on the data with the imputed columns' holes
    filled by observed values: what the fitter would refuse in every completed dataset (no
    random term, a response the family cannot take, dependent columns, a grouping factor of
    one level, a bad dispersion formula) is found before sampling."""
    from mlimpute.analysis._design import NonFiniteDesign, build_design
    from mlimpute.analysis._dispersion import build_dispersion, dispersion_columns
    from mlimpute.analysis._family import get_family
    from mlimpute.analysis.glmm import check_nagq
    from mlimpute.analysis.formula import parse_formula
    from mlimpute.substantive import probe_frame

    from mlimpute.design import declared_levels

    names = list(imputed)
    filled = df.assign(**probe_frame(df, names, declared_levels(model)).set_axis(df.index))   # holes filled as the substantive set-up does
    try:
        parsed = parse_formula(a.formula)
        if a.family == "gaussian":
            extra = frozenset() if a.dispersion is None else frozenset(dispersion_columns(a.dispersion, filled))
            design = build_design(parsed, filled, kind="gaussian", na_action="raise", extra_columns=extra)
            if a.dispersion is not None:
                build_dispersion(a.dispersion, filled, design.rows)
        else:
            design = build_design(parsed, filled, kind=get_family(a.family, a.link).name, na_action="raise")
            check_nagq(a.formula, design, a.nagq or 1)
    except NonFiniteDesign as exc:
        # the row it names may hold a filled value: the rows as observed name one of their own
        # (a filled value is another row's observed one, so one of them gives it too)
        try:
            build_design(parse_formula(a.formula), df, kind="gaussian" if a.family == "gaussian" else
                         get_family(a.family, a.link).name, na_action="drop")
        except NonFiniteDesign as own:
            exc = own
        raise DataError(f"[[analysis]] {a.name!r}: {exc}") from None
    except (SpecError, DataError) as exc:
        raise type(exc)(f"[[analysis]] {a.name!r}: {exc}") from None


def check_output_outside_input(cfg: PipelineConfig) -> None:
    """A Parquet-folder input must not hold the output folder: the run would read its own
    outputs as data (it failed half-way, then every later run refused the input folder for
    the diagnostics.csv it had left there)."""
    data, out = Path(cfg.data.path).resolve(), Path(cfg.output.dir).resolve()
    if data.is_dir() and (out == data or data in out.parents):
        raise SpecError(
            f"[output] dir = {str(cfg.output.dir)!r} is inside the input folder [data] path = "
            f"{str(cfg.data.path)!r}: the run would read its own outputs as data; put the output elsewhere"
        )


def check_output_dir(path: str | os.PathLike) -> None:
    """Raise :class:`SpecError` unless ``path`` is (or can be created as) a writable folder.

    Nothing is created: the nearest existing ancestor must be a writable folder.
    """
    p = Path(path)
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SpecError(f"[output] dir = {str(p)!r} cannot be created: {str(probe)!r} is a file, "
                        "not a folder; choose another output folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == p else f"cannot be created ({str(probe)!r} is not writable)"
        raise SpecError(f"[output] dir = {str(p)!r} {what}; choose a folder you can write to "
                        "or fix its permissions")


def check_runner(cfg: PipelineConfig, api_url: str | None = None) -> None:
    """Dask needs prefect-dask; a remote cluster needs a Prefect API its workers can reach.

    ``api_url`` defaults to Prefect's setting (environment or profile), read only when needed.
    """
    if cfg.runner.kind != "dask":
        return
    if importlib.util.find_spec("prefect_dask") is None:
        raise SpecError('[runner] kind = "dask" needs prefect-dask and dask.distributed; install '
                        "them with pip install 'mlimpute[dask]' (or -e '.[dask]' in a clone)")
    address = cfg.runner.address
    if address is None:
        return
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    if _is_local(host):
        return
    if api_url is None:
        from prefect.settings import PREFECT_API_URL  # only here: importing Prefect takes seconds

        api_url = PREFECT_API_URL.value()
    if not api_url:
        raise SpecError(
            f"[runner] address = {address!r} is a cluster on another machine: its workers cannot "
            "reach the temporary Prefect API of this process. Start a Prefect server the workers "
            "can reach (`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL, e.g. "
            "PREFECT_API_URL=http://<this-host>:4200/api")


def _is_local(host: str) -> bool:
    if host in ("localhost", "", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
