"""The process boundary as a rule: pyproject.toml's import-linter contracts hold for the code, and
they would catch a break (shown on a throwaway pair of packages with our names and one bad import
each, hidden inside a function as the lazy imports here are)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from helpers import ROOT

CONFIG = ROOT / "pyproject.toml"
ROOT_PACKAGES = ("deepseek_desktop", "engine")


def lint_imports(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    # --no-cache: grimp would otherwise leave .import_linter_cache in the checkout.
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_code_keeps_every_contract():
    result = lint_imports(str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def write_module(root: Path, dotted: str, body: str = "") -> None:
    """``a.b.c`` as ``a/b/c.py`` with the packages above it."""
    *packages, name = dotted.split(".")
    folder = root.joinpath(*packages)
    for depth in range(1, len(packages) + 1):
        init = root.joinpath(*packages[:depth], "__init__.py")
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    (folder / f"{name}.py").write_text(body)


def lazy_import(module: str) -> str:
    return f"\ndef later_{module.replace('.', '_')}():\n    import {module}\n"


def test_the_contracts_catch_lazy_imports_across_the_boundary(tmp_path):
    contracts = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]
    exceptions = [rule for contract in contracts for rule in contract.get("ignore_imports", [])]
    modules = {"engine.catalog": lazy_import("engine.runtime.loader"),
               "deepseek_desktop.window": lazy_import("torch"),
               "deepseek_desktop.models_panel": "from engine import catalog\n"}  # an indirect chain
    # The allowed exceptions exist in the copy too: an exception that matches nothing is an error.
    for rule in exceptions:
        assert "*" not in rule, f"name each exception in full, so this copy can hold it: {rule}"
        importer, imported = (part.strip() for part in rule.split("->"))
        modules.setdefault(imported, "")
        modules[importer] = modules.get(importer, "") + lazy_import(imported)
    for dotted, body in modules.items():
        if dotted.partition(".")[0] in ROOT_PACKAGES:  # torch and the like stay names, not files
            write_module(tmp_path, dotted, body)
    # The editable install's import hook (a .pth file) would find the real packages first: without
    # site processing, the copy at the front of the path is what grimp reads.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"]])}
    command = [sys.executable, "-S", "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
               "--no-cache", "--no-logo", str(CONFIG)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert f"0 kept, {len(contracts)} broken" in report
    assert "deepseek_desktop.window -> torch" in report
    assert "deepseek_desktop.models_panel -> engine.catalog" in report  # the chain to the runtime
    assert "engine.catalog -> engine.runtime.loader" in report
    for rule in exceptions:  # the listed exceptions stay allowed
        assert rule.replace(" ", "") not in report.replace(" ", ""), report
