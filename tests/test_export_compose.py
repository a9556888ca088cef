"""What Docker would run, checked without Docker: exported compose files (and the default one in
packaging/docker/) against the Compose file schema (vendored from compose-spec, see
tests/data/compose-spec/SOURCE.txt), the Dockerfiles by every file they COPY, the Grafana dashboard by
the engine's real metric names, and the Linux desktop entry and AppStream metainfo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from engine.config import EngineConfig
from engine.export import ExportSource, export
from helpers import ROOT

SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json").read_text())
DOCKER = ROOT / "packaging" / "docker"
LINUX = ROOT / "packaging" / "linux"


def source(device: str = "cpu") -> ExportSource:
    return ExportSource(config=EngineConfig.from_dict({"model": {"path": "/models/SmolLM2", "device": device},
                                                      "batching": {"max_batch_size": 8}}), origin="test")


def validate(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(data)  # raises with the offending key and the rule it breaks
    return data


def test_default_compose_file_is_valid():
    data = validate(DOCKER / "compose.yaml")
    assert data["services"]["engine"]["build"]["dockerfile"] == "packaging/docker/Dockerfile"
    for volume in data["services"]["engine"]["volumes"] + data["services"]["grafana"]["volumes"]:
        host = volume.split(":")[0]
        if host.startswith("../"):
            assert (DOCKER / host).exists(), f"compose.yaml mounts {host}, which is not in the repository"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_exported_compose_is_valid(device, tmp_path):
    out = tmp_path / "compose"
    export(source(device), "compose", out)
    data = validate(out / "compose.yaml")
    engine = data["services"]["engine"]
    assert engine["healthcheck"]["test"][-1].endswith("urlopen('http://127.0.0.1:8000/health', timeout=4)")
    assert "${API_KEY" in engine["environment"]["DEEPSEEK_ENGINE_API_KEY"]
    assert any(v.endswith(":/models/SmolLM2:ro") for v in engine["volumes"])
    assert any(v.endswith(":/data/huggingface") for v in engine["volumes"])
    gpu = engine.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    assert (gpu == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]) == (device == "cuda")
    assert engine["build"]["dockerfile"].endswith("Dockerfile.cuda" if device == "cuda" else "Dockerfile")
    assert EngineConfig.from_toml(out / "engine.toml").model.path == "/models/SmolLM2"
    prometheus = yaml.safe_load((out / "prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["engine:8000"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/engine_api_key"
    assert data["secrets"]["engine_api_key"] == {"environment": "API_KEY"}
    assert "API_KEY=" in (out / ".env.example").read_text()
    for mount in data["services"]["grafana"]["volumes"][:2]:
        assert (out / mount.split(":")[0]).is_dir()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_exported_compose_vllm_is_valid(device, tmp_path):
    out = tmp_path / "vllm"
    export(source(device), "compose-vllm", out)
    data = validate(out / "compose.yaml")
    service = data["services"]["vllm"]
    assert service["command"] == ["--config", "/config/vllm.yaml"] and "./vllm.yaml:/config/vllm.yaml:ro" in service["volumes"]
    assert "${API_KEY" in service["environment"]["VLLM_API_KEY"]
    mounted = yaml.safe_load((out / "vllm.yaml").read_text())
    assert mounted["model"] == "/models/SmolLM2" and mounted["host"] == "0.0.0.0" and mounted["port"] == 8000
    assert ("deploy" in service) == (device == "cuda")
    assert yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"][0]["static_configs"][0]["targets"] == ["vllm:8000"]


def copied_paths(dockerfile: Path) -> list[str]:
    """The sources of every COPY/ADD that reads the build context (not another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    paths = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        paths += args[:-1]
    return paths


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_every_file_a_dockerfile_copies_exists(name):
    paths = copied_paths(DOCKER / name)
    assert "engine/" in paths and "resources/" in paths
    for path in paths:
        assert (ROOT / path).exists(), f"{name} copies {path}, which the build context (the repository) lacks"
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    for path in paths:
        kept = [f"!{path}"] + [f"!{path.split('/')[0]}/"]
        assert any(k in ignore for k in kept), f"{name}.dockerignore leaves {path} out of the build context"
    text = (DOCKER / name).read_text()
    assert "USER engine" in text and "/health" in text


def test_dashboard_reads_metrics_the_engine_serves(server):
    text = httpx.get(server.url + "/metrics", headers=server.headers, timeout=10).text
    served = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | set(re.findall(r"^([a-zA-Z_:][\w:]*)", text, re.M))
    dashboard = json.loads((ROOT / "resources" / "grafana" / "dashboards" / "deepseek-engine.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b((?:engine|process)_[a-z0-9_]+)", expr)}
    assert len(used) >= 10
    missing = sorted(name for name in used if name not in served)
    assert not missing, f"the dashboard queries metrics the engine does not serve: {missing}"


def test_desktop_entry_and_metainfo(tmp_path):
    entry = (LINUX / "io.github.deepseek_desktop.DeepSeekDesktop.desktop").read_text()
    assert "Exec=deepseek-desktop" in entry and "Icon=deepseek-desktop" in entry
    validator = shutil.which("desktop-file-validate")
    if validator:
        result = subprocess.run([validator, str(LINUX / "io.github.deepseek_desktop.DeepSeekDesktop.desktop")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    appstream = shutil.which("appstreamcli")
    if appstream:
        result = subprocess.run([appstream, "validate", "--no-net", "--explain",
                                 str(LINUX / "io.github.deepseek_desktop.DeepSeekDesktop.metainfo.xml")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    home = tmp_path / "share"
    result = subprocess.run([sys.executable, "-m", "deepseek_desktop.app", "--install-desktop-entry"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    installed = (home / "applications" / "io.github.deepseek_desktop.DeepSeekDesktop.desktop").read_text()
    assert f"Exec={Path(sys.executable).parent / 'deepseek-desktop'} %F" in installed
    assert (home / "icons" / "hicolor" / "256x256" / "apps" / "deepseek-desktop.png").is_file()
    assert (home / "icons" / "hicolor" / "scalable" / "apps" / "deepseek-desktop.svg").is_file()
    assert (home / "metainfo" / "io.github.deepseek_desktop.DeepSeekDesktop.metainfo.xml").is_file()
