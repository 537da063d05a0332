"""The ``mlimpute`` command: the pipeline, its checks, and pooling of outside imputations.

    mlimpute run CONFIG.toml [--out DIR] [--set KEY=VALUE ...]    the pipeline (Prefect flow)
    mlimpute demo [--out DIR]                                      the pipeline on ExamScores
    mlimpute validate CONFIG.toml                                  config and data, no sampling
    mlimpute analyse IMPUTED.parquet --formula F [--family ...] [--dispersion D]   fit and pool elsewhere's imputations
    mlimpute serve CONFIG.toml --cron "0 2 * * *"                  the pipeline on a schedule

Exit codes: 0 done; 2 bad configuration or data (one line on stderr, nothing written); 1 the
run failed. Configuration and data are checked before Prefect starts, so a bad file costs a
second, not the API's start-up. Only :mod:`mlimpute.pipeline` imports Prefect, and this module
imports the parts of it that do lazily.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import DataError, MlimputeError, SpecError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEMO_CONFIG = "exam_scores.toml"


def examples_dir() -> Path:
    """The bundled examples: ``$MLIMPUTE_EXAMPLES``, the source tree, or ``<prefix>/share``."""
    candidates = [os.environ.get("MLIMPUTE_EXAMPLES"),
                  Path(__file__).resolve().parents[1] / "examples",
                  Path(sys.prefix) / "share" / "mlimpute" / "examples"]
    for c in candidates:
        if c and (Path(c) / DEMO_CONFIG).is_file():
            return Path(c)
    raise SpecError(
        "the bundled example (examples/exam_scores.toml) was not found beside the package or "
        f"in {Path(sys.prefix) / 'share' / 'mlimpute'}; reinstall mlimpute, or set "
        "MLIMPUTE_EXAMPLES to a folder holding exam_scores.toml")


def _say(text: str) -> None:
    """A status line on stderr (stdout keeps the results)."""
    print(f"mlimpute: {text}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    """The message on one line, with its notes (``analyse`` notes which imputation failed)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    notes = [" ".join(str(n).split()) for n in getattr(exc, "__notes__", ())]
    return "; ".join([text, *notes])


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from .config import parse_override

    out: dict[str, Any] = dict(parse_override(s) for s in getattr(args, "set", None) or [])
    if getattr(args, "out", None):
        out["output.dir"] = str(Path(args.out).expanduser().resolve())
    return out


def _load_and_check(config: str | Path, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from .config import load_config
    from .pipeline.checks import check_all

    cfg = load_config(config, overrides)
    return cfg, check_all(cfg)


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    from .pipeline.checks import describe_clusters

    cfg, summary = _load_and_check(args.config, _overrides(args))
    print(f"{args.config}: OK. {summary['rows']} rows in {describe_clusters(summary['clusters'])} clusters; to impute: "
          + ", ".join(f"{k} ({v} missing)" for k, v in summary["missing"].items())
          + f"; {len(cfg.analysis)} analysis(es); output to {cfg.output.dir}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return _run_config(Path(args.config), _overrides(args), args)


def _demo(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    for key in ("imputations", "burn", "between", "chains", "seed"):
        if getattr(args, key) is not None:
            overrides[f"sampler.{key}"] = getattr(args, key)
    return _run_config(examples_dir() / DEMO_CONFIG, overrides, args)


def _run_config(config: Path, overrides: dict[str, Any], args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from .pipeline.runtime import prepare_environment

    prepare_environment(verbose=args.verbose)  # environment only, before Prefect is imported
    cfg, _ = _load_and_check(config, overrides)
    try:
        cfg.output.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"[output] dir = {str(cfg.output.dir)!r} cannot be created ({exc}); "
                        "choose a folder you can write to") from None
    from .pipeline import runtime, shutdown, store

    store.lock_output(cfg.output.dir).close()   # a folder in use is refused now (exit 2), not after Prefect's start-up
    runtime.ensure_home()
    url = os.environ.get("PREFECT_API_URL")
    _say(f"connecting to the Prefect API at {url}" if url else
         "starting Prefect and its local API (10-40 s; longest the first time on a machine, "
         f"while it creates its database in {os.environ['PREFECT_HOME']})")
    t_import = time.perf_counter()
    from .pipeline.flow import pipeline

    t_import = time.perf_counter() - t_import
    # the whole run in a worker thread: SIGINT/SIGTERM stop it within seconds (see shutdown)
    return shutdown.run(_flow_in_api, pipeline, str(config), overrides, cfg, args, t0, t_import,
                        cache=store.cache_dir(cfg.output.dir))


def _flow_in_api(pipeline: Any, config: str, overrides: dict[str, Any], cfg: Any,
                 args: argparse.Namespace, t0: float, t_import: float) -> int:
    from .pipeline.runtime import prefect_api

    with prefect_api() as api:
        if api.started_here:
            _say(f"Prefect's API is up ({api.startup_seconds:.0f} s) at {api.url}; to follow the "
                 f"run from another shell while it lasts: export PREFECT_API_URL={api.url}")
        t_flow = time.perf_counter()
        state = pipeline(config_path=config, overrides=overrides,
                         progress=not args.no_progress, config=cfg, return_state=True)
        t_flow = time.perf_counter() - t_flow
    total = time.perf_counter() - t0
    startup = t_import + api.startup_seconds
    timing = (f"{total:.1f} s in all: Prefect start-up {startup:.1f} s (import {t_import:.1f} s, "
              f"API {api.startup_seconds:.1f} s{'' if api.started_here else ', external'}), "
              f"flow {t_flow:.1f} s")
    if not state.is_completed():
        exc = state.result(raise_on_failure=False)
        print(f"mlimpute: error: the run failed ({state.name}): "
              f"{_one_line(exc) if isinstance(exc, BaseException) else state.message}",
              file=sys.stderr)
        print(f"mlimpute: {timing}", file=sys.stderr)
        return EXIT_FAILED   # bad input found once the flow runs is a failed run (2 means: refused before it)
    res = state.result()
    _print_summary(res)
    print(f"mlimpute: {timing}")
    return EXIT_OK


def _print_summary(res: dict[str, Any]) -> None:
    import pandas as pd

    for name, path in res["pooled"].items():
        tidy = pd.read_csv(path)
        cols = ["term", "estimate", "std_error", "conf_low", "conf_high", "p_value", "fmi"]
        print(f"\n{name} (pooled):")
        print(tidy[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    cached = sum(s == "Cached" for s in res["chain_states"])
    print(f"\nchains: {len(res['chain_states'])} ({cached} from cache); "
          f"warnings: {len(res['warnings'])}")
    for w in res["warnings"]:
        print(f"  - {w}")
    print(f"written: {res['output_dir']} (report: {res['report']})")


def _analyse(args: argparse.Namespace) -> int:
    from .io import read_table
    from .pooling import analyse

    path = Path(args.imputed)
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist; give a Parquet file, a folder of Parquet "
                        "files (hive-partitioned or not) or a CSV file of imputations")
    if args.out and (args.out.endswith(("/", "\\")) or Path(args.out).is_dir()):
        raise SpecError(f"--out {args.out!r} is a folder; give the CSV file to write, e.g. "
                        f"{str(Path(args.out) / 'pooled.csv')!r}")
    data = read_table(path)
    kw: dict[str, Any] = {}
    if args.family == "gaussian":
        kw["reml"] = not args.ml
        if args.dispersion:
            kw["dispersion"] = args.dispersion
        for flag, value in (("--link", args.link), ("--nagq", args.nagq)):
            if value:
                raise SpecError(f"{flag} applies to --family binomial or poisson (a GLMM); a gaussian "
                                "model has neither: remove it, or give the family")
    elif args.dispersion:
        raise SpecError(f"--dispersion applies to --family gaussian (a residual variance); "
                        f"a {args.family} model has none: remove it")
    else:
        if args.link:
            kw["link"] = args.link
        if args.nagq:
            kw["nagq"] = args.nagq
    import warnings

    from .pipeline.notices import counted   # no Prefect there

    with warnings.catch_warnings(record=True) as records:   # each once, counted (a fit's come once per imputation)
        warnings.simplefilter("always")
        pooled = analyse(data, args.formula, family=args.family, imputation_col=args.imputation_col,
                         df_com=args.df_com, **kw)
    for w in counted(records):
        print(f"mlimpute: warning: {w}", file=sys.stderr)
    print(pooled.summary())
    if args.out:
        from .io import atomic_path

        out = Path(args.out)
        with atomic_path(out) as tmp:
            pooled.tidy().to_csv(tmp, index=False)
        if pooled.varcomp_pooled is not None:
            with atomic_path(out.with_name(out.stem + "_varcomp" + out.suffix)) as tmp:
                pooled.varcomp().to_csv(tmp, index=False)
        print(f"written: {out}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from .pipeline.runtime import prepare_environment

    prepare_environment(verbose=args.verbose)  # environment only, before Prefect is imported
    overrides = _overrides(args)
    _load_and_check(args.config, overrides)
    if args.timezone is not None:   # before the server starts (Prefect would refuse it after)
        import zoneinfo

        if args.timezone not in zoneinfo.available_timezones():   # Prefect's own test (IANA names only)
            raise SpecError(f"--timezone {args.timezone!r} is not a known time zone; give an IANA name "
                            "such as Europe/London, America/New_York or UTC")
    from .pipeline.runtime import ensure_home

    ensure_home()
    from .pipeline.serve import check_cron, serve

    try:
        check_cron(args.cron)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    serve(args.config, args.cron, name=args.name, overrides=overrides, timezone=args.timezone)
    return EXIT_OK


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="mlimpute", description="Multilevel multiple imputation")
    parser.add_argument("--version", action="version", version=f"mlimpute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
        if positional:
            p.add_argument("config", help="TOML configuration (see examples/exam_scores.toml)")
        p.add_argument("--out", help="output folder (overrides [output] dir)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set sampler.burn=2000 (repeatable)")

    def flow_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument("-v", "--verbose", action="store_true", help="Prefect's log on the console")

    run = sub.add_parser("run", help="run the pipeline of a configuration")
    config_args(run)
    flow_args(run)
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="run the pipeline on the bundled ExamScores example")
    config_args(demo, positional=False)
    demo.set_defaults(out="mlimpute-demo-output")
    for key in ("imputations", "burn", "between", "chains", "seed"):
        demo.add_argument(f"--{key}", type=int, help=f"override sampler {key}")
    flow_args(demo)
    demo.set_defaults(func=_demo)

    val = sub.add_parser("validate", help="check a configuration and its data (no sampling)")
    config_args(val)
    val.add_argument("-v", "--verbose", action="store_true", help="the traceback of an unexpected error")
    val.set_defaults(func=_validate)

    ana = sub.add_parser("analyse", aliases=["analyze"],
                         help="fit a model on every imputation of a long table and pool")
    ana.add_argument("imputed", help="Parquet file or folder (hive-partitioned), or CSV, with "
                                     "an imputation column (imputation, Imputation or .imp)")
    ana.add_argument("--formula", required=True, help="lme4-style formula, e.g. 'y ~ x + (1 | g)'")
    ana.add_argument("--family", default="gaussian", choices=["gaussian", "binomial", "poisson"])
    ana.add_argument("--ml", action="store_true", help="gaussian: ML instead of REML")
    ana.add_argument("--dispersion", help="gaussian: log-linear residual variance, e.g. '~ sex' "
                     "(log sigma2_i = log sigma2 + w_i'gamma)")
    ana.add_argument("--link", help="binomial: logit or probit")
    ana.add_argument("--nagq", type=int, help="GLMM quadrature points (1 = Laplace)")
    ana.add_argument("--imputation-col", help="name of the imputation column")
    ana.add_argument("--df-com", type=float, help="complete-data df (default: each fit's residual "
                     "df, Barnard-Rubin; 'inf': Rubin's large-sample df, as mitml without df.com)")
    ana.add_argument("--out", help="write the pooled table to this CSV (and *_varcomp.csv)")
    ana.add_argument("-v", "--verbose", action="store_true", help="the traceback of an unexpected error")
    ana.set_defaults(func=_analyse)

    srv = sub.add_parser("serve", help="run the pipeline on a cron schedule")
    config_args(srv)
    srv.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" (02:00 daily)')
    srv.add_argument("--name", help="deployment name (default: <config>-scheduled)")
    srv.add_argument("--timezone", help="time zone of the schedule, e.g. Europe/London")
    srv.add_argument("-v", "--verbose", action="store_true", help="Prefect's log on the console")
    srv.set_defaults(func=_serve)
    return parser


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (timeout, systemd, SLURM, CI) means what Ctrl-C means


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return args.func(args)
    except (SpecError, DataError) as exc:
        print(f"mlimpute: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MlimputeError as exc:
        print(f"mlimpute: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("mlimpute: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. the Prefect API did not start: a failure, not bad input
        if getattr(args, "verbose", False):
            raise
        print(f"mlimpute: error: {type(exc).__name__}: {_one_line(exc)} (rerun with -v for "
              "the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
