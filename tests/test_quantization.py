"""Quantized weights: int8/int4 loads of tiny Llama, Qwen2 and DeepSeek-V3 through /admin/load,
the estimate against what the loads hold, a checkpoint saved quantized by torchao, the refusals,
and the demo model's greedy agreement with float32 on a real text.

Everything runs on the CPU with torchao; bitsandbytes and FP8 need a CUDA GPU, which is why the
tests about them are refusals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from helpers import EngineServer, engine_without_model

ESTIMATE_TOLERANCE = 0.15   # as for float loads (tests/test_memory.py)
TEXT = Path(__file__).parent / "data" / "pride_and_prejudice_ch1.txt"


# ---------------------------------------------------------------------------- a server to load into


@pytest.fixture(scope="module")
def srv():
    """An engine started with no model; the tests load into it."""
    with engine_without_model() as server:
        yield server


def complete(srv, model: str) -> str:
    r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=120,
                   json={"model": model, "prompt": "The capital of France", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


# ---------------------------------------------------------------------------- loads through /admin/load


@pytest.mark.parametrize("arch", ["llama", "qwen2", "deepseek_v3"])
@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_load_reports_progress_serves_and_matches_the_estimate(srv, tiny_model, arch, method):
    events = srv.load_and_wait(tiny_model(arch), quantization=method, chunk_size_mb=0.01)
    ready = events[-1]
    assert ready["state"] == "ready", events
    assert ready["quantization"].startswith(f"{method} (torchao")
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["bytes_done"] == progress[-1]["bytes_total"]
    loading = next(e for e in events if e["type"] == "state" and e["state"] == "loading")
    assert loading["quantization"].startswith(method)

    # What the weights hold, measured from the loaded tensors (int data + scales), against the
    # torch-free estimate; and well under the float32 weights.
    actual, estimated = ready["memory_bytes"], ready["estimated_bytes"]
    assert abs(estimated - actual) <= ESTIMATE_TOLERANCE * actual, (estimated, actual)
    from engine.catalog import inspect_path
    from engine.memory import estimate

    entry = inspect_path(tiny_model(arch))
    float32 = estimate(entry, "float32", device="cpu").weights_bytes
    assert actual < (0.5 if method == "int8" else 0.5) * float32, (actual, float32)

    status = httpx.get(srv.url + "/admin/status", headers=srv.headers, timeout=30).json()
    assert status["quantization"] == ready["quantization"]
    assert complete(srv, f"tiny-{arch}")  # the quantized model generates


def test_estimate_counts_quantized_weights_without_torch(tiny_model):
    """The estimate's three figures for one model: int4 < int8 < float, the float figure kept."""
    from engine.catalog import inspect_path
    from engine.memory import estimate

    entry = inspect_path(tiny_model("qwen2"))
    sizes = {q: estimate(entry, "float32", device="cpu", quantization=q) for q in ("none", "int8", "int4")}
    assert sizes["int4"].weights_bytes < sizes["int8"].weights_bytes < sizes["none"].weights_bytes
    assert sizes["int8"].float_weights_bytes == sizes["none"].weights_bytes
    assert sizes["int4"].quantization == "int4"


def test_auto_picks_no_quantization_when_the_float_model_fits(srv, tiny_model):
    events = srv.load_and_wait(tiny_model("llama"), quantization="auto")
    loading = next(e for e in events if e["type"] == "state" and e["state"] == "loading")
    assert events[-1]["state"] == "ready" and events[-1]["quantization"] == "none"
    assert "auto picked no quantization" in loading["quantization_note"]


def test_auto_picks_int4_when_only_int4_fits(tiny_model):
    """The choice itself, against a device whose free memory is stated (torch-free)."""
    from engine.catalog import inspect_path
    from engine.quantization import plan

    fits = {"none": False, "int8": False, "int4": True}
    chosen = plan("auto", "cpu", group_size=32, fits=fits, sizes={"none": 3000, "int8": 900, "int4": 600},
                  free_bytes=700)
    assert chosen.method == "int4" and "auto picked int4" in chosen.note and "700 B free" in chosen.note


# ---------------------------------------------------------------------------- a checkpoint saved quantized


@pytest.fixture(scope="module")
def torchao_int8_checkpoint(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama quantized by torchao (int8 weight-only) and saved with save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    import engine.runtime  # noqa: F401  (torchao's start-up noise filtered, as in the worker)
    from torchao.quantization import Int8WeightOnlyConfig

    src, out = tiny_model("llama"), tmp_path_factory.mktemp("prequantized") / "tiny-llama-torchao-int8"
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32,
                                                 quantization_config=TorchAoConfig(quant_type=Int8WeightOnlyConfig()))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def test_prequantized_checkpoint_is_recognised_and_loaded_as_saved(srv, torchao_int8_checkpoint):
    from engine.catalog import inspect_path
    from engine.memory import estimate

    entry = inspect_path(torchao_int8_checkpoint)
    assert entry.loadable, entry.problem
    assert entry.pre_quantized.method == "torchao" and entry.pre_quantized.bits == 8
    assert entry.quantization == "torchao 8-bit (Int8WeightOnlyConfig)"

    events = srv.load_and_wait(torchao_int8_checkpoint)
    ready = events[-1]
    assert ready["state"] == "ready", events
    assert ready["quantization"] == "pre-quantized torchao 8-bit (Int8WeightOnlyConfig)"
    assert abs(estimate(entry, device="cpu").weights_bytes - ready["memory_bytes"]) <= ESTIMATE_TOLERANCE * ready["memory_bytes"]
    assert complete(srv, "tiny-llama-torchao-int8")


def test_import_keeping_int8_writes_a_checkpoint_that_loads_as_saved(srv, tiny_model, tmp_path):
    """What ``import-gguf`` writes for a Q8 file (the weights it de-quantized, here a tiny Llama's):
    a torchao int8 checkpoint, the embedding int8 too, recognised by the catalog and loaded as
    saved, a third of the float folder on disk."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.catalog import inspect_path
    from engine.gguf_import import _save_int8

    src = tiny_model("llama")
    plain = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    out = tmp_path / "kept-int8"
    out.mkdir()
    _save_int8(plain, AutoTokenizer.from_pretrained(src), out)
    entry = inspect_path(out)
    assert entry.loadable and entry.quantization == "torchao 8-bit (Int8WeightOnlyConfig)", entry.problem
    float_bytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    assert sum(f.stat().st_size for f in out.glob("*.safetensors")) < 0.4 * float_bytes

    events = srv.load_and_wait(out, served_model_name="tiny-kept-int8")
    assert events[-1]["state"] == "ready" and events[-1]["quantization"].startswith("pre-quantized torchao 8-bit")
    assert events[-1]["memory_bytes"] < 0.4 * float_bytes  # the tables came back int8 as well
    assert complete(srv, "tiny-kept-int8")


def test_recorded_precision_class_is_read_by_the_catalog(tiny_model, tmp_path):
    """import-gguf's record of a kept int4 class (float weights, which torchao cannot save in int4
    for a CPU): the catalog reads it; anything else in that key is ignored."""
    from engine.catalog import inspect_path
    from engine.quantization.checkpoints import KEPT_CLASS_KEY

    folder = tmp_path / "kept-int4"
    shutil.copytree(tiny_model("qwen2"), folder)
    config = json.loads((folder / "config.json").read_text())
    assert inspect_path(folder).precision_class is None
    config[KEPT_CLASS_KEY] = {"quantization": "int4", "source": "Q4_K"}
    (folder / "config.json").write_text(json.dumps(config))
    assert inspect_path(folder).precision_class == "int4"
    config[KEPT_CLASS_KEY] = {"quantization": "fp3"}
    (folder / "config.json").write_text(json.dumps(config))
    assert inspect_path(folder).precision_class is None


def test_int4_holds_bfloat16_scales_and_answers_in_the_model_dtype(tiny_model):
    """int4 on a CPU: group scales and zeros in bfloat16 (half of float32's bytes), the layer's
    output handed back in the model's float32."""
    import torch

    from engine.config import ModelConfig
    from engine.runtime.loader import load_model

    loaded = load_model(ModelConfig(path=str(tiny_model("qwen2")), device="cpu", dtype="float32", quantization="int4"))
    projection = loaded.model.model.layers[0].mlp.up_proj
    assert type(projection.weight).__name__ == "Int4OpaqueTensor"
    assert projection.weight.scale_and_zero.dtype == torch.bfloat16
    hidden = torch.randn(1, 3, projection.in_features)
    with torch.no_grad():
        assert projection(hidden).dtype == torch.float32
        assert loaded.model(torch.tensor([[1, 2, 3]])).logits.dtype == torch.float32


def test_int8_table_built_in_chunks_equals_one_piece():
    """A large vocabulary's table is quantized a chunk of rows at a time: the same int8 data and
    scales as quantizing it whole."""
    import torch

    import engine.runtime  # noqa: F401  (torchao's start-up noise filtered)
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    from engine.runtime.quantize import int8_rows

    table = torch.randn(1000, 64, generator=torch.Generator().manual_seed(0))
    whole = Int8Tensor.from_hp(table, PerRow())
    chunked = int8_rows(table, chunk_bytes=64 * 4 * 96)  # 96 rows a chunk, the last one short
    assert torch.equal(chunked.qdata, whole.qdata) and torch.equal(chunked.scale, whole.scale)
    assert torch.equal(chunked.dequantize(), whole.dequantize())
    ids = torch.tensor([0, 95, 96, 999])
    assert torch.equal(torch.nn.functional.embedding(ids, chunked), torch.nn.functional.embedding(ids, whole))


def test_int8_tables_read_only_the_rows_they_need_and_answer_as_torchao_does(tiny_model):
    """The int8 embedding gathers the rows asked for and the head multiplies with ATen's int8 kernel
    (torchao's tensor would convert the whole table to float on each call): the same logits."""
    import torch

    from engine.config import ModelConfig
    from engine.runtime.loader import load_model

    loaded = load_model(ModelConfig(path=str(tiny_model("llama")), device="cpu", dtype="float32", quantization="int8"))
    embedding, head = loaded.model.get_input_embeddings(), loaded.model.get_output_embeddings()
    assert "forward" in vars(embedding) and "forward" in vars(head)
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        fast = loaded.model(ids).logits
        del embedding.forward, head.forward  # back to torchao's own paths
        assert torch.allclose(fast, loaded.model(ids).logits, atol=1e-4)


# ---------------------------------------------------------------------------- refusals


def _with_quantization_config(src: Path, out: Path, quantization_config: dict) -> Path:
    """A copy of ``src`` whose config.json says it was saved quantized (the weights are never read:
    the refusal comes first)."""
    shutil.copytree(src, out)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("name, quantization_config, says", [
    ("bnb-4bit", {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
     "bitsandbytes 4-bit (nf4), which runs only on a CUDA GPU"),
    ("fp8", {"quant_method": "fp8", "weight_block_size": [128, 128]},
     "fp8 8-bit (block 128x128), which runs only on a CUDA GPU"),
])
def test_gpu_only_checkpoint_is_refused_on_cpu_before_loading(srv, tiny_model, tmp_path, name, quantization_config,
                                                                says):
    """Without CUDA (this machine's case; ``device: cpu`` makes it so on any machine)."""
    folder = _with_quantization_config(tiny_model("llama"), tmp_path / name, quantization_config)
    r = srv.post("/admin/load", {"path": str(folder), "device": "cpu"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert says in message and 'quantization = "int8" or "int4"' in message and "torchao" in message
    assert httpx.get(srv.url + "/health", timeout=30).status_code in (200, 503)  # the worker still answers


def test_quantizing_an_already_quantized_model_is_refused_naming_both(srv, torchao_int8_checkpoint):
    r = srv.post("/admin/load", {"path": str(torchao_int8_checkpoint), "quantization": "int4"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "already quantized with torchao 8-bit (Int8WeightOnlyConfig)" in message and "quantization 'int4'" in message


def test_prequantized_method_without_its_library_is_refused_by_the_catalog(tiny_model, tmp_path):
    """GPTQ needs gptqmodel, which is not installed here: the catalog says so before any weight."""
    from engine.catalog import inspect_path
    from engine.quantization.checkpoints import package_present

    folder = _with_quantization_config(tiny_model("llama"), tmp_path / "gptq",
                                       {"quant_method": "gptq", "bits": 4, "group_size": 128})
    entry = inspect_path(folder)
    assert entry.quantization == "gptq 4-bit (group 128)"
    if package_present("gptqmodel"):
        assert entry.loadable
    else:
        assert not entry.loadable and "needs the gptqmodel package (pip install gptqmodel)" in entry.problem


def test_bitsandbytes_on_cpu_is_refused_naming_torchao():
    from engine.quantization import PreQuantized, QuantizationRefused, plan

    with pytest.raises(QuantizationRefused, match="runs only on a CUDA GPU.*torchao"):
        plan("none", "cpu", pre_quantized=PreQuantized("bitsandbytes", 8, "LLM.int8"))


def test_gguf_quant_type_transformers_cannot_read_is_named_by_the_catalog(tmp_path):
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    from engine.catalog import inspect_path

    path = tmp_path / "q8k.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(256)
    writer.add_head_count(2)
    # Q8_K: blocks of 256 weights in 292 bytes; gguf-py has no de-quantizer for it.
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((256, 292), dtype=np.uint8),
                      raw_dtype=GGMLQuantizationType.Q8_K)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(256, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    entry = inspect_path(path)
    assert not entry.loadable and "cannot read GGUF quant type Q8_K (1 tensors)" in entry.problem


def test_gguf_precision_classes():
    from engine.quantization import gguf_precision_class

    assert [gguf_precision_class(t) for t in ("Q8_0", "Q4_K", "Q5_1", "Q4_1", "F16", "BF16", None)] == \
        ["int8", "int4", "int4", "int4", "none", "none", "none"]


def test_reads_the_quantization_configs_of_the_common_methods():
    from engine.quantization import read_quantization_config

    cases = {
        "awq 4-bit (group 128)": {"quant_method": "awq", "bits": 4, "group_size": 128},
        "bitsandbytes 8-bit (LLM.int8)": {"quant_method": "bitsandbytes", "load_in_8bit": True},
        "compressed-tensors 8-bit (float)": {"quant_method": "compressed-tensors", "config_groups": {
            "group_0": {"weights": {"num_bits": 8, "type": "float"}}}},
        "torchao 4-bit (Int4WeightOnlyConfig)": {"quant_method": "torchao", "quant_type": {
            "default": {"_type": "Int4WeightOnlyConfig", "_data": {"group_size": 128}}}},
    }
    for label, config in cases.items():
        assert read_quantization_config({"quantization_config": config}).label == label
    assert read_quantization_config({"model_type": "llama"}) is None


# ---------------------------------------------------------------------------- the demo model's agreement

INT8_AGREEMENT, INT4_AGREEMENT = 0.95, 0.85


@pytest.mark.slow
def test_demo_model_greedy_agreement_with_float32_on_real_text(demo_fetch):
    """Top-1 next-token agreement with float32 over 256 tokens of Pride and Prejudice (chapter 1),
    teacher-forced: int8 at least 0.95, int4 at least 0.85."""
    from engine.config import ModelConfig
    from engine.runtime.loader import load_model
    from engine.runtime.quantize import top1_agreement

    base, result = demo_fetch
    assert result.returncode == 0, result.stderr[-2000:]
    folder = result.stdout.strip().splitlines()[-1]
    reference = load_model(ModelConfig(path=folder, device="cpu", dtype="float32"))
    ids = reference.tokenizer(TEXT.read_text(), return_tensors="pt").input_ids[:, :257]
    assert ids.shape[1] == 257
    for method, threshold in (("int8", INT8_AGREEMENT), ("int4", INT4_AGREEMENT)):
        quantized = load_model(ModelConfig(path=folder, device="cpu", dtype="float32", quantization=method))
        agreement = top1_agreement(reference.model, quantized.model, ids)
        assert agreement >= threshold, (method, agreement)
        del quantized


def test_torchao_start_up_noise_stays_out_of_the_log(srv, tiny_model):
    """torchao's failed CUDA kernel libraries (a CPU-only torch) are one info line, not warnings."""
    srv.load_and_wait(tiny_model("llama"), quantization="int8")
    logs = srv.logs()
    assert not [line for line in logs if "Failed to load" in str(line.get("message", ""))]
    assert not [line for line in logs if "natively supported by torch.compile" in str(line.get("message", ""))]


# ---------------------------------------------------------------------------- exports


def _vllm(model: dict, **source):
    from engine.config import EngineConfig
    from engine.export.source import ExportSource
    from engine.export.vllm import vllm_args

    args, _env, notes = vllm_args(ExportSource(config=EngineConfig.from_dict({"model": model}), origin="test", **source))
    return args, {n.setting: n.why for n in notes}


def test_vllm_export_carries_the_quantization_or_says_what_differs(tiny_model, torchao_int8_checkpoint):
    args, notes = _vllm({"path": str(torchao_int8_checkpoint)})
    assert args["quantization"] == "torchao"  # saved quantized: vLLM loads the method as saved

    args, notes = _vllm({"path": str(tiny_model("llama")), "device": "cuda", "quantization": "int4"},
                        hardware={"gpus": [{"memory_bytes": 8 * 2**30}]})
    assert args["quantization"] == "bitsandbytes" and "not torchao's int4" in notes["model.quantization = int4"]

    args, notes = _vllm({"path": str(tiny_model("llama")), "device": "cpu", "quantization": "int8"})
    assert "quantization" not in args
    assert "CPU backend quantizes nothing on load" in notes["model.quantization = int8"]


@pytest.mark.slow
def test_demo_gguf_loads_keeping_its_precision_class(demo_gguf):
    """The demo's Q4_1 GGUF loaded directly in int4 (its class): the catalog's choice, the estimate
    within 15% of the loaded tensors, and still the right answer."""
    from engine.catalog import inspect_path
    from engine.config import ModelConfig
    from engine.memory import estimate
    from engine.quantization import gguf_precision_class
    from engine.runtime.loader import load_model

    entry = inspect_path(demo_gguf)
    assert entry.dtype == "Q4_1" and gguf_precision_class(entry.dtype) == "int4"
    loaded = load_model(ModelConfig(path=str(demo_gguf), device="cpu", dtype="float32", quantization="int4"))
    assert loaded.quantization.startswith("int4 (torchao")
    estimated = estimate(entry, "float32", device="cpu", quantization="int4")
    assert abs(estimated.weights_bytes - loaded.weights_bytes) <= ESTIMATE_TOLERANCE * loaded.weights_bytes
    assert loaded.weights_bytes < 0.25 * estimated.float_weights_bytes
    ids = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_config_file_quantization_is_served(tiny_model):
    """``[model] quantization`` in the engine's TOML: the model the worker starts with is held so."""
    path = tiny_model("qwen2")
    with EngineServer(config=f'[model]\npath = "{path}"\ndevice = "cpu"\nquantization = "int4"\n') as srv:
        status = httpx.get(srv.url + "/admin/status", headers=srv.headers, timeout=30).json()
        assert status["quantization"].startswith("int4 (torchao") and status["config"]["model"]["quantization"] == "int4"
        assert complete(srv, "tiny-qwen2")


def test_tuning_budget_estimates_the_weights_as_held(tiny_model):
    """Before /metrics has measured the weights, the budget counts them as the model holds them."""
    from engine.catalog import inspect_path
    from engine.memory import DeviceMemory
    from engine.memory_budget import device_budget

    entry = inspect_path(tiny_model("llama"))
    memory = DeviceMemory("cpu", 8 * 2**30, 4 * 2**30, "psutil")
    weights = {q: device_budget(entry, memory, dtype="float32", batch=1, context=64, quantization=q).part("weights").bytes
               for q in ("none", "int8", "int4")}
    assert weights["int4"] < weights["int8"] < 0.5 * weights["none"]
