"""The decode path's KV cache grows in place and still decodes exactly what transformers does."""

import httpx
import pytest
import torch
from concurrent.futures import ThreadPoolExecutor
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from engine.runtime.kv_cache import HEADROOM_TOKENS, GrowingLayer, cache_bytes, growing_cache

ARCHITECTURES = ["llama", "qwen2", "deepseek_v3"]


def greedy_by_hand(model, cache, ids: torch.Tensor, steps: int, drop_row_at: int = -1) -> list[list[int]]:
    """Greedy decode of a left-padded batch step by step, as the batcher runs it; at step
    ``drop_row_at`` the first row leaves (the cache's rows are selected, as for a finished row)."""
    mask = (ids != -1).long()
    ids = ids.clamp(min=0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = list(range(ids.shape[0]))
    out: list[list[int]] = [[] for _ in rows]
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                       logits_to_keep=1).logits[:, -1]
        positions = positions[:, -1:]
        for step in range(steps):
            tokens = logits.argmax(-1)
            for row, token in zip(rows, tokens.tolist()):
                out[row].append(token)
            if step == drop_row_at:
                keep = torch.arange(1, len(rows))
                cache.batch_select_indices(keep)
                mask, positions, tokens, rows = mask[keep], positions[keep], tokens[keep], rows[1:]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], -1)
            positions = positions + 1
            logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                           cache=cache).logits[:, -1]
    return out


@pytest.fixture(scope="module")
def loaded(tiny_model):
    models = {}

    def get(arch):
        if arch not in models:
            folder = tiny_model(arch)
            models[arch] = (AutoTokenizer.from_pretrained(folder),
                            AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval())
        return models[arch]

    return get


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_growing_cache_decodes_as_transformers_own_cache_past_several_buffer_growths(loaded, arch):
    tokenizer, model = loaded(arch)
    prompts = ["Hello", "The capital of France is", "def add(a, b):"]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    ids = torch.tensor([[-1] * (width - len(e)) + e for e in encoded])  # -1: left padding
    steps = 3 * HEADROOM_TOKENS + 5  # the buffers fill and are replaced three times
    growing = growing_cache(model.config)
    assert any(isinstance(layer, GrowingLayer) for layer in growing.layers)
    expected = greedy_by_hand(model, DynamicCache(config=model.config), ids, steps, drop_row_at=40)
    assert greedy_by_hand(model, growing, ids, steps, drop_row_at=40) == expected
    # And a lone prompt matches model.generate itself.
    alone = torch.tensor([encoded[1]])
    with torch.inference_mode():
        reference = model.generate(alone, attention_mask=torch.ones_like(alone), max_new_tokens=steps,
                                   do_sample=False, eos_token_id=[], pad_token_id=0)[0, alone.shape[1]:].tolist()
    assert greedy_by_hand(model, growing_cache(model.config), alone.clone(), steps)[0] == reference


def test_a_decode_step_writes_into_the_buffer_instead_of_copying_the_cache(loaded):
    _, model = loaded("llama")
    cache = growing_cache(model.config)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        model(input_ids=ids, cache=cache)
        layer = cache.layers[0]
        storage = layer.keys.untyped_storage().data_ptr()
        for token in range(HEADROOM_TOKENS):
            model(input_ids=torch.tensor([[token + 10]]), cache=cache)
            assert layer.keys.untyped_storage().data_ptr() == storage  # same buffer: nothing copied
        assert layer.keys.shape[-2] == 4 + HEADROOM_TOKENS
        model(input_ids=torch.tensor([[3]]), cache=cache)  # full: a bigger buffer, once
        assert layer.keys.untyped_storage().data_ptr() != storage
    per_token = sum(l.keys[0, :, 0].numel() + l.values[0, :, 0].numel() for l in cache.layers) * 4
    # The memory counted is what is allocated: the tokens held and the room for the next ones.
    assert cache_bytes(cache) == (4 + HEADROOM_TOKENS + 1 + HEADROOM_TOKENS) * per_token


@pytest.mark.parametrize("arch", ["qwen2", "deepseek_v3"])
def test_late_joiners_match_generate_in_dynamic_mode(tiny_model, greedy_reference, worker_pool, arch):
    """test_batching covers Llama's late joiners; these two run the same check on the other
    architectures, with the running request long enough to grow its cache several times."""
    folder = tiny_model(arch)
    long_prompt, late = "The capital of France is", ["Hello", "def add(a, b):", "Zürich"]
    expected_long = greedy_reference(folder, long_prompt, 120)
    expected_late = [greedy_reference(folder, p, n) for p, n in zip(late, (10, 40, 70))]
    srv = worker_pool.get(folder, "--batching-mode", "dynamic", "--max-wait-ms", "300")
    joins_before = srv.metric("engine_batch_joins_total")

    def complete(prompt, max_tokens):
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=120, json={
            "model": folder.name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    body = {"model": folder.name, "prompt": long_prompt, "max_tokens": 120, "temperature": 0, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", headers=srv.headers, json=body, timeout=120) as r:
        lines = r.iter_lines()
        received = [next(lines)]  # the long request is decoding now
        with ThreadPoolExecutor(3) as pool:
            texts = list(pool.map(complete, late, (10, 40, 70)))
        received += list(lines)
    import json

    streamed = "".join(json.loads(l[6:])["choices"][0]["text"] for l in received
                       if l.startswith("data: {") and json.loads(l[6:])["choices"])
    assert texts == expected_late
    assert streamed == expected_long
    assert srv.metric("engine_batch_joins_total") > joins_before


def run_python(code: str, **env) -> str:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return subprocess.run([sys.executable, "-c", code], env={**environment, **env}, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_torch_threads_wait_passively_in_the_worker_unless_told_otherwise():
    show = "import os, engine.runtime, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert run_python(show) == "PASSIVE"
    assert run_python(show, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # the user's choice is kept
    # Once torch (and OpenMP) is loaded the setting would not take effect: it is not pretended.
    assert run_python("import os, torch, engine.runtime; print(os.environ.get('OMP_WAIT_POLICY'))") == "None"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cpu_linear_layers_through_onednn_decode_as_atens(tiny_model, arch):
    """engine.runtime.onednn_linear: every float32 nn.Linear switches, and greedy decoding gives
    the same tokens as ATen's kernel (a batch with a row leaving midway)."""
    from engine.runtime.onednn_linear import use_onednn_linear

    folder = tiny_model(arch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ["Hello", "The capital of France is"]]
    width = max(map(len, encoded))
    ids = torch.tensor([[-1] * (width - len(e)) + e for e in encoded])
    before = greedy_by_hand(model, DynamicCache(config=model.config), ids, 24, drop_row_at=5)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert use_onednn_linear(model) == linears > 0
    assert all("forward" in vars(m) for m in model.modules() if type(m) is torch.nn.Linear)
    if arch != "deepseek_v3":  # multi-head latent attention has no q/k/v of one input
        for layer in model.model.layers:  # fused: the q/k/v rows are views of one matrix
            q, k, v = layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj
            assert q._fused_product is k._fused_product is v._fused_product
            assert q.weight.untyped_storage().data_ptr() == v.weight.untyped_storage().data_ptr()
    assert greedy_by_hand(model, DynamicCache(config=model.config), ids, 24, drop_row_at=5) == before


def test_atens_linear_is_kept_when_asked_or_when_onednn_is_missing(tiny_model, monkeypatch, caplog):
    from engine.runtime.onednn_linear import CPU_LINEAR_ENV, onednn_unavailable, use_onednn_linear

    folder = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    monkeypatch.setenv(CPU_LINEAR_ENV, "aten")
    with caplog.at_level("INFO", logger="engine.loader"):
        assert use_onednn_linear(model) == 0
    assert f"stay on ATen's kernel: {CPU_LINEAR_ENV}=aten" in caplog.text
    monkeypatch.setenv(CPU_LINEAR_ENV, "fast")
    caplog.clear()
    with caplog.at_level("INFO", logger="engine.loader"):
        assert onednn_unavailable() is None  # a value it does not know: said, and the default kept
    assert f"{CPU_LINEAR_ENV}=fast is not understood (aten or onednn)" in caplog.text
    monkeypatch.delenv(CPU_LINEAR_ENV)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    caplog.clear()
    with caplog.at_level("INFO", logger="engine.loader"):
        assert use_onednn_linear(model) == 0
    assert "no oneDNN linear kernel" in caplog.text
    assert not any("forward" in vars(m) for m in model.modules())
    bfloat16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    monkeypatch.undo()
    assert use_onednn_linear(bfloat16) == 0  # no gain measured in bfloat16: ATen's kept
