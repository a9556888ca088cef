"""vLLM's own argument parser accepts what ``export --format vllm`` writes: the YAML through
``vllm serve --config FILE`` and the command line, each turned into vLLM's engine arguments with
the values the export meant. Runs where vLLM is importable: ``.venv-vllm`` (``make vllm``: vLLM's
CPU build from PyPI in its own environment); elsewhere it is SKIPPED, which is not a pass."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from engine.config import EngineConfig
from engine.export import ExportSource, export
from helpers import ROOT

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
CHECK = Path(__file__).parent / "vllm_parse_check.py"

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(),
                                reason="vLLM is not importable here: run 'make vllm' to build .venv-vllm "
                                       "(vLLM's CPU build); this check did NOT run")

CONFIGS = {
    "continuous": {"model": {"path": "/models/tiny", "served_model_name": "tiny", "dtype": "bfloat16",
                             "max_context": 2048, "trust_remote_code": True},
                   "batching": {"mode": "continuous", "max_batch_size": 8, "max_batch_tokens": 1024, "page_size": 32,
                                "num_blocks": 500},
                   "cache": {"memory_mb": 2048, "disk_mb": 8192},
                   "server": {"host": "0.0.0.0", "port": 8001, "log_level": "warning"}},
    "dynamic-no-cache": {"model": {"path": "/models/tiny"}, "batching": {"mode": "dynamic", "max_batch_size": 4},
                         "cache": {"type": "none"}},
    "two-nodes": {"model": {"path": "/models/big", "device": "cuda", "max_context": 8192}},
}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    """Every config exported, then parsed by vLLM in one process (its import takes ~20 s)."""
    folder = tmp_path_factory.mktemp("vllm")
    argv, written = [], {}
    for name, config in CONFIGS.items():
        options = {"nodes": 2, "gpus_per_node": 4} if name == "two-nodes" else {}
        out = folder / f"{name}.yaml"
        result = export(ExportSource(config=EngineConfig.from_dict(config), origin="test"), "vllm", out, **options)
        argv += [str(out), "vllm serve " + result.command.split("vllm serve ", 1)[1]]  # without the env in front
        written[name] = yaml.safe_load(out.read_text())
    result = subprocess.run([str(VLLM_PYTHON), str(CHECK), *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"vLLM's parser refused an export:\n{result.stderr[-3000:]}"
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: (written[name], answer) for name, answer in zip(CONFIGS, answers)}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vllm_parser_accepts_the_export(name, parsed):
    written, answer = parsed[name]
    for via in ("config", "command"):
        got = answer[via]
        assert got["model"] == written["model"]
        for key, value in written.items():
            if key.startswith("no-") and value is True:  # a false switch, as vLLM reads it from a file
                key, value = key[3:], False
            field = key.replace("-", "_")
            if field == "model":
                continue
            if field == "served_model_name":
                assert got[field] == str([value]), (via, key)
            else:
                assert got[field] == value, (via, key, got[field], value)
        assert got["api_key"] is None  # the key comes from VLLM_API_KEY, never from the file
