"""The memory estimate against real loads of tiny models (weights, KV cache, one prefill)."""

import json
import os
import subprocess
import sys

import pytest

import tiny_models
from engine.catalog import inspect_folder
from engine.memory import estimate
from helpers import ROOT

# glibc keeps freed memory in per-thread arenas, so RSS would show its own caching rather than
# what the model needs; these settings make RSS follow live allocations.
LIVE_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}


@pytest.fixture(scope="module")
def deepseek_long(model_root, tokenizer_dir):
    return tiny_models.build_model("deepseek_v3", model_root / "deepseek-long", tokenizer_dir, hidden_size=256,
                                   intermediate_size=768, moe_intermediate_size=128, num_hidden_layers=4,
                                   max_position_embeddings=4096, kv_lora_rank=64, q_lora_rank=64,
                                   qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32)


def measure(path, batch, context):
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "measure_memory.py"), str(path), str(batch),
                             str(context)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **LIVE_RSS_ENV, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("which, batch, context", [("llama", 2, 2048), ("llama", 1, 6000), ("deepseek", 2, 2048)])
def test_estimate_is_within_15_percent_of_measured_growth(long_model_dir, deepseek_long, which, batch, context):
    path = long_model_dir if which == "llama" else deepseek_long
    m = measure(path, batch, context)
    est = m["estimate"]["total_bytes"]
    ratio = est / m["peak_growth_bytes"]
    print(f"{which} b={batch} c={context}: estimate {est >> 20} MiB, measured {m['peak_growth_bytes'] >> 20} MiB, "
          f"ratio {ratio:.3f}")
    assert 0.85 <= ratio <= 1.15


def test_verdicts_follow_free_memory(llama_dir):
    from engine.memory import DeviceMemory, compare_with_device

    est = estimate(inspect_folder(llama_dir), "float32", 1, 256)
    for free, verdict in ((est.total_bytes * 3, "fits"), (int(est.total_bytes * 1.05), "tight"),
                          (est.total_bytes // 2, "will-not-fit"), (None, "unknown")):
        compare_with_device(est, DeviceMemory("cuda:0", None if free is None else free * 2, free, "test"))
        assert est.verdict == verdict


def test_gpu_estimate_without_a_gpu_reads_unknown_not_zero(llama_dir):
    est = estimate(inspect_folder(llama_dir), "auto", 1, 256, device="cuda:0")
    assert est.dtype == "bfloat16" and est.device_free_bytes is None and est.verdict == "unknown"


def test_estimate_refuses_a_model_without_weights(tmp_path):
    with pytest.raises(ValueError, match="parameter count unknown"):
        estimate(inspect_folder(tmp_path))
