"""The wheel carries what the program reads at run time: build it (``python -m build``: the sdist,
then the wheel from the sdist, as a packager would), install it, not editable, into a fresh virtual
environment, and run both programs and an export of every format from that install. Dependencies
come from this test environment through a .pth file (nothing is downloaded, torch is not installed
again); the project itself only from the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from engine.export import FORMATS
from helpers import ROOT

GOLDEN = ROOT / "tests" / "data" / "export" / "golden"
EPOCH = "1796040000"


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env or os.environ.copy())
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build uses this environment's setuptools instead of downloading one.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, cwd=ROOT)
    (found,) = dist.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv).stdout.strip())
    # This environment's packages (torch, PySide6 …) after the new one's own site-packages.
    (purelib / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel, cwd=venv)
    return venv


def test_the_wheel_carries_every_resource(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = run("git", "ls-files", "resources", "packaging", cwd=ROOT).stdout.split()
    assert tracked, "git lists no resources"
    missing = [path for path in tracked if f"engine/_data/{path}" not in names]
    assert not missing, f"the wheel lacks {missing}: setup.py copies resources/ and packaging/, MANIFEST.in grafts them"
    assert "deepseek_desktop/resources/themes/dark.qss" in names


def test_programs_and_every_export_run_from_the_install(installed, tmp_path):
    bin_dir = installed / "bin"
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONPATH": "", "QT_QPA_PLATFORM": "offscreen"}
    where = run(bin_dir / "python", "-c", "import engine, deepseek_desktop; print(engine.__file__, deepseek_desktop.__file__)",
                cwd=tmp_path, env=env).stdout
    assert str(installed) in where and str(ROOT) not in where, f"not the installed copy: {where}"
    assert "export" in run(bin_dir / "deepseek-engine", "--help", cwd=tmp_path, env=env).stdout
    assert "--install-desktop-entry" in run(bin_dir / "deepseek-desktop", "--help", cwd=tmp_path, env=env).stdout
    sweep = tmp_path / "tests" / "data" / "export" / "sweep.json"  # the golden files name this path
    sweep.parent.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "export" / "sweep.json", sweep)
    for fmt, spec in FORMATS.items():
        out = tmp_path / "out" / fmt
        out.parent.mkdir(exist_ok=True)
        run(bin_dir / "deepseek-engine", "export", "--from", "tests/data/export/sweep.json#1",
            "--model", "/models/SmolLM2-135M-Instruct.gguf", "--format", fmt, "--out", out, cwd=tmp_path, env=env)
        for golden in (GOLDEN / fmt).rglob("*"):
            if golden.is_file():
                written = out / golden.relative_to(GOLDEN / fmt) if spec.folder else out
                assert written.read_text() == golden.read_text(), f"{fmt}: {written} differs from {golden}"
    home = tmp_path / "share"
    run(bin_dir / "deepseek-desktop", "--install-desktop-entry", cwd=tmp_path, env={**env, "XDG_DATA_HOME": str(home)})
    assert (home / "icons" / "hicolor" / "48x48" / "apps" / "deepseek-desktop.png").is_file()
