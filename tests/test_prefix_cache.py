"""The tiered prefix KV cache: bounds, eviction order, disk after restart, corrupt files."""

import httpx
import pytest
import torch

from engine.metrics import EngineMetrics
from engine.runtime.prefix_cache import BLOCK_TOKENS, PrefixCache, block_keys
from helpers import EngineServer


def kv(tokens, layers=2, width=8, fill=1.0):
    return [(torch.full((1, 2, tokens, width), fill), torch.full((1, 2, tokens, width), -fill)) for _ in range(layers)]


def entry_bytes(tokens, layers=2, width=8):
    return layers * 2 * (2 * tokens * width * 4)


def make_cache(tmp_path, ram_entries, disk_entries=10, fingerprint="f" * 32):
    size = entry_bytes(BLOCK_TOKENS)
    file_size = size + 1024  # a file adds its header
    return PrefixCache(fingerprint, ram_entries * size, disk_entries * file_size, tmp_path, EngineMetrics(),
                       torch.device("cpu"))


def prompt(seed, blocks=1):
    return [seed * 1000 + i for i in range(BLOCK_TOKENS * blocks + 1)]


def test_hit_returns_the_longest_cached_prefix(tmp_path):
    cache = make_cache(tmp_path, 4)
    tokens = prompt(1, blocks=2)
    cache.store(tokens, kv(len(tokens), fill=2.0))
    hit = cache.lookup(tokens[:-1] + [999999])  # same prefix, another last token
    assert hit is not None and hit.tokens == 2 * BLOCK_TOKENS
    assert torch.equal(hit.layers[0][0], torch.full((1, 2, 2 * BLOCK_TOKENS, 8), 2.0))
    assert cache.lookup([7] * (BLOCK_TOKENS + 1)) is None
    assert cache.lookup(tokens[:BLOCK_TOKENS]) is None  # nothing left to compute: no use


def test_ram_is_bounded_and_evicts_least_recently_used(tmp_path):
    cache = make_cache(tmp_path, ram_entries=2)
    for seed in (1, 2, 3):
        cache.store(prompt(seed), kv(BLOCK_TOKENS + 1))
        if seed == 2:
            assert cache.lookup(prompt(1)) is not None  # 1 is now more recent than 2
    keys = {block_keys(cache.fingerprint, prompt(s))[0][1]: s for s in (1, 2, 3)}
    assert sorted(keys[k] for k in cache.ram_keys()) == [1, 3]
    assert cache.metrics.prefix_evictions.labels(tier="ram")._value.get() == 1
    assert cache.metrics.prefix_bytes.labels(tier="ram")._value.get() <= 2 * entry_bytes(BLOCK_TOKENS)
    cache.flush()
    assert cache.lookup(prompt(2)) is not None  # from the disk tier
    assert cache.metrics.prefix_hits.labels(tier="disk")._value.get() == 1


def test_disk_is_bounded(tmp_path):
    cache = make_cache(tmp_path, ram_entries=1, disk_entries=2)
    for seed in range(5):
        cache.store(prompt(seed), kv(BLOCK_TOKENS + 1))
        cache.flush()
    assert len(list(cache.dir.glob("*.safetensors"))) == 2
    assert cache.disk_used() <= 2 * (entry_bytes(BLOCK_TOKENS) + 1024)
    assert cache.metrics.prefix_evictions.labels(tier="disk")._value.get() == 3


@pytest.mark.parametrize("damage", ["garbage", "foreign", "truncated"])
def test_bad_disk_files_are_deleted_and_never_loaded(tmp_path, damage, caplog):
    cache = make_cache(tmp_path, ram_entries=0)
    cache.store(prompt(1), kv(BLOCK_TOKENS + 1))
    cache.flush()
    [path] = cache.dir.glob("*.safetensors")
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        other = make_cache(tmp_path / "other", ram_entries=0, fingerprint="e" * 32)
        other.store(prompt(1), kv(BLOCK_TOKENS + 1))
        other.flush()
        [foreign] = other.dir.glob("*.safetensors")
        path.write_bytes(foreign.read_bytes())
    assert cache.lookup(prompt(1)) is None
    assert not path.exists()
    assert "dropping prefix cache file" in caplog.text


def test_server_reuses_a_shared_prefix_across_requests_and_restarts(long_model_dir, greedy_reference, tmp_path):
    shared = "The capital of France is Paris. " * 12
    prompts = [shared + "Hello there", shared + "Large language models"]
    expected = [greedy_reference(long_model_dir, p, 12) for p in prompts]
    env = {"DEEPSEEK_DESKTOP_CACHE": str(tmp_path)}

    def ask(srv, text):
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60, json={
            "model": long_model_dir.name, "prompt": text, "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    for mode in ("sequential", "dynamic"):
        with EngineServer(long_model_dir, env=env, extra_args=["--batching-mode", mode]) as srv:
            assert [ask(srv, p) for p in prompts] == expected
            tier = "ram" if mode == "sequential" else "disk"  # the second server starts with the files
            assert srv.metric("engine_prefix_cache_hits_total", {"tier": tier}) >= 1
            assert srv.metric("engine_prefix_cache_tokens_reused_total") >= BLOCK_TOKENS
    assert list(tmp_path.glob("prefix-kv/*/*.safetensors"))


def test_a_long_entry_serves_its_shorter_prefixes_also_after_a_restart(tmp_path):
    cache = make_cache(tmp_path, 4)
    stored = prompt(1, blocks=3)
    cache.store(stored, kv(len(stored)))
    cache.flush()
    other = stored[:BLOCK_TOKENS + 5] + [424242] * 40  # shares one block and a bit
    hit = cache.lookup(other)
    assert hit is not None and hit.tokens == BLOCK_TOKENS and hit.layers[0][0].shape[2] == BLOCK_TOKENS
    restarted = make_cache(tmp_path, 4)  # a new process: the index is rebuilt from the files
    hit = restarted.lookup(other)
    assert hit is not None and hit.tokens == BLOCK_TOKENS
    assert restarted.metrics.prefix_hits.labels(tier="disk")._value.get() == 1
