"""The catalog: models described from config.json and safetensors headers, without torch."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from engine.catalog import inspect_folder, inspect_path, list_models, scan_folders
from helpers import ROOT


@pytest.mark.parametrize("arch, expected", [
    ("llama", {"architecture": "LlamaForCausalLM", "attention": "gqa", "heads": 4, "kv_heads": 2, "head_dim": 16}),
    ("qwen2", {"architecture": "Qwen2ForCausalLM", "attention": "gqa", "heads": 4, "kv_heads": 2, "head_dim": 16}),
    ("deepseek_v3", {"architecture": "DeepseekV3ForCausalLM", "attention": "mla", "heads": 4, "head_dim": 24,
                     "v_head_dim": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "experts": 4,
                     "experts_per_token": 2}),
])
def test_entry_describes_the_architecture(tiny_model, arch, expected):
    import torch
    from transformers import AutoModelForCausalLM

    entry = inspect_folder(tiny_model(arch))
    assert entry.loadable and entry.problem is None
    for key, value in expected.items():
        assert getattr(entry, key) == value, key
    assert entry.layers == 2 and entry.context_length == 256 and entry.dtype == "float32"
    model = AutoModelForCausalLM.from_pretrained(tiny_model(arch), dtype=torch.float32)
    assert entry.params == sum(t.numel() for t in model.state_dict().values())  # params and saved buffers
    assert entry.size_bytes == sum(f.stat().st_size for f in tiny_model(arch).glob("*.safetensors"))


def test_kv_elements_match_the_cache_transformers_builds(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from engine.runtime.kv_cache import cache_argument

    for arch in ("llama", "qwen2", "deepseek_v3"):
        entry = inspect_folder(tiny_model(arch))
        model = AutoModelForCausalLM.from_pretrained(tiny_model(arch), dtype=torch.float32)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(torch.randint(3, 300, (2, 50)), use_cache=True, **{cache_argument(model): cache})
        elements = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
        assert elements == 2 * 50 * entry.kv_elements_per_token(), arch


def test_scan_finds_folders_gguf_and_broken_models(tmp_path, tiny_model):
    root = tmp_path / "library"
    shutil.copytree(tiny_model("llama"), root / "org" / "llama")
    shutil.copytree(tiny_model("qwen2"), root / "qwen2")
    (root / "qwen2" / "config.json").unlink()
    (root / "empty" / "deep").mkdir(parents=True)
    (root / "not-gguf.gguf").write_bytes(b"GGUF but not really")
    entries = {e.name: e for e in scan_folders([root])}
    assert set(entries) == {"llama", "qwen2", "not-gguf"}
    assert entries["llama"].loadable
    assert not entries["qwen2"].loadable and entries["qwen2"].problem == "no config.json"
    assert entries["not-gguf"].format == "gguf" and "not a readable GGUF" in entries["not-gguf"].problem


def test_hf_cache_is_scanned_honouring_hf_hub_cache(tmp_path, tiny_model, monkeypatch):
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / "abc123"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in tiny_model("llama").iterdir():
        blob = blobs / f"{f.name}.blob"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    entries = list_models([], hf_cache=True)
    assert [(e.name, e.source, e.loadable) for e in entries] == [("acme/tiny-llama", "hf-cache", True)]


def test_models_cli_json_is_torch_free_and_has_the_fields(tmp_path, tiny_model):
    shutil.copytree(tiny_model("deepseek_v3"), tmp_path / "ds")
    code = ("import sys, json; from engine.cli import main; rc = main(['models', '--dir', sys.argv[1], "
            "'--no-hf-cache', '--json']); print('TORCH', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "TORCH False" in result.stderr
    [entry] = json.loads(result.stdout)
    for key in ("name", "path", "architecture", "params", "size_bytes", "dtype", "layers", "heads", "kv_heads",
                "head_dim", "context_length", "loadable", "problem"):
        assert key in entry
    assert entry["architecture"] == "DeepseekV3ForCausalLM" and entry["loadable"] is True


def test_inspect_cli_prints_entry_and_estimate(tiny_model):
    result = subprocess.run([sys.executable, "-m", "engine", "inspect", str(tiny_model("llama")), "--batch", "4",
                             "--context", "128", "--dtype", "bfloat16", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    est = out["estimate"]
    assert est["dtype"] == "bfloat16" and est["batch"] == 4 and est["context"] == 128
    assert est["weights_bytes"] == out["model"]["params"] * 2
    assert est["verdict"] == "fits" and est["device_free_bytes"] > 0


def test_inspect_a_folder_that_is_not_a_model(tmp_path):
    entry = inspect_path(tmp_path)
    assert not entry.loadable and entry.problem.startswith("not a model folder")
