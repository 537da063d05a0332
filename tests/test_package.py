"""The package's shape: Prefect only in mlimpute.pipeline and flows/, a clean public namespace,
``--version``, and flows/ as thin Prefect entry points rather than an installed package."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mlimpute as mi

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlimpute"


def library_modules() -> list[str]:
    """Every module of mlimpute outside the pipeline, plus the pipeline's Prefect-free parts
    that ``mlimpute validate`` uses, and the CLI."""
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="mlimpute.")
             if not m.name.startswith("mlimpute.pipeline")]
    return ["mlimpute", *names, "mlimpute.pipeline", "mlimpute.pipeline.checks"]


def test_importing_the_library_does_not_import_prefect():
    modules = library_modules()
    assert "mlimpute.cli" in modules and "mlimpute.pooling._varcomp" in modules
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_only_the_pipeline_imports_prefect_in_its_source():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "pipeline" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in ("prefect", "prefect_dask")]
    assert offenders == []


def test_public_namespace_is_all_and_submodules():
    public = {n for n in vars(mi) if not n.startswith("_")}
    submodules = {m.name for m in pkgutil.iter_modules([str(PACKAGE)])}
    assert public - submodules <= set(mi.__all__)  # nothing public but __all__ and submodules
    assert set(mi.__all__) - {"__version__"} <= public
    assert "annotations" not in public and "PackageNotFoundError" not in public


def test_version_option(capsys):
    from mlimpute.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlimpute {mi.__version__}"


def test_flows_folder_is_thin_entry_points_not_a_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["mlimpute*"]
    assert not (ROOT / "flows" / "__init__.py").exists()
    for path in (ROOT / "flows").glob("*.py"):  # each entry point only imports the pipeline
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert all(isinstance(n, ast.ImportFrom) and n.module.startswith("mlimpute.pipeline")
                   for n in imports), path
        assert len(tree.body) - len(imports) <= 2, f"{path} holds more than entry points"


def test_prefect_yaml_points_at_the_pipeline_flow():
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    from mlimpute.pipeline.flow import pipeline

    project = yaml.safe_load((ROOT / "flows" / "prefect.yaml").read_text())
    assert project["deployments"], "no deployment in prefect.yaml"
    for dep in project["deployments"]:
        path, _, name = dep["entrypoint"].partition(":")
        assert (ROOT / path).is_file(), dep["entrypoint"]
        loaded = load_flow_from_entrypoint(str(ROOT / path) + ":" + name)
        assert loaded.name == pipeline.name and loaded.fn is pipeline.fn
        assert set(dep["parameters"]) <= set(pipeline.parameters.properties)
        assert (ROOT / dep["parameters"]["config_path"]).is_file()
