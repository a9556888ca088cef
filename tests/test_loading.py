"""Loading through the admin API: progress events, cancel, timeout, broken models, replacement."""

import json
import shutil
import threading
import time

import httpx
import psutil
import pytest

from helpers import engine_without_model, read_events


@pytest.fixture(scope="module")
def srv():
    """An engine started with no model; tests load into it."""
    with engine_without_model() as server:
        yield server


def chat_works(srv, model):
    r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60,
                   json={"model": model, "prompt": "Hi", "max_tokens": 2})
    return r.status_code == 200


def test_load_reports_progress_until_all_bytes(srv, llama_dir, big_model_dir):
    events = srv.load_and_wait(big_model_dir, chunk_size_mb=16)
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[-2:] == ["loading", "ready"]
    progress = [e for e in events if e["type"] == "progress"]
    assert len(progress) >= 5
    done = [p["bytes_done"] for p in progress]
    assert done == sorted(done)
    last = progress[-1]
    assert last["bytes_done"] == last["bytes_total"] > 250e6
    assert last["shard"] == last["shards"] > 20 and last["tensors_done"] == last["tensors_total"]
    assert all({"elapsed_s", "eta_s"} <= p.keys() for p in progress)
    ready = events[-1]
    assert ready["model"] == "big-llama" and ready["memory_bytes"] > 250e6
    assert 0.85 < ready["estimated_bytes"] / ready["memory_bytes"] < 1.15
    assert chat_works(srv, "big-llama")
    status = httpx.get(srv.url + "/admin/status", headers=srv.headers).json()
    assert status["state"] == "ready" and status["model"] == "big-llama" and status["dtype"] == "float32"


def test_loading_another_model_replaces_it(srv, llama_dir):
    events = srv.load_and_wait(llama_dir)
    assert events[-1]["state"] == "ready" and events[-1]["model"] == "tiny-llama"
    models = httpx.get(srv.url + "/v1/models", headers=srv.headers).json()["data"]
    assert [m["id"] for m in models] == ["tiny-llama"]


def _make_broken(kind, src, tmp_path):
    folder = tmp_path / kind
    if kind == "not-a-model":
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
        return folder, "not a model folder"
    shutil.copytree(src, folder)
    if kind == "missing-config":
        (folder / "config.json").unlink()
        return folder, "no config.json"
    if kind == "unknown-architecture":
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type="wizardlm9", architectures=["WizardForCausalLM"])
        (folder / "config.json").write_text(json.dumps(config))
        return folder, "'wizardlm9' is not known"
    shards = sorted(folder.glob("*.safetensors"))
    if kind == "truncated-shard":
        data = shards[1].read_bytes()
        shards[1].write_bytes(data[: len(data) // 2])
        return folder, f"{shards[1].name} is truncated"
    if kind == "missing-shard":
        shards[2].unlink()
        return folder, f"shard {shards[2].name}"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated-shard", "missing-shard", "missing-config", "unknown-architecture",
                                  "not-a-model"])
def test_broken_model_is_refused_and_the_loaded_one_kept(srv, llama_dir, tiny_model, tmp_path, kind):
    src = _sharded_copy(tiny_model("qwen2"), tmp_path)
    folder, fragment = _make_broken(kind, src, tmp_path)
    if httpx.get(srv.url + "/health").status_code != 200:
        srv.load_and_wait(llama_dir)
    with srv.events() as stream:
        lines = stream.iter_lines()
        r = srv.post("/admin/load", {"path": str(folder)})
        assert r.status_code == 400, r.text
        assert fragment in r.json()["error"]["message"]
        events = read_events(lines, lambda e: e["type"] == "error")
    assert fragment in events[-1]["message"]
    assert httpx.get(srv.url + "/health").status_code == 200
    assert chat_works(srv, "tiny-llama")


def _sharded_copy(model_dir, tmp_path):
    from engine.reshard import reshard

    return reshard(model_dir, tmp_path / "src", 0.1)


def test_missing_path_is_404(srv):
    r = srv.post("/admin/load", {"path": "/no/such/model"})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]


def test_bad_load_options_are_400(srv, llama_dir):
    for body in ({"path": str(llama_dir), "dtype": "float8"}, {"path": str(llama_dir), "device": "gpu"},
                 {"path": str(llama_dir), "chunk_size_mb": 0}, {"path": str(llama_dir), "colour": "red"}):
        r = srv.post("/admin/load", body)
        assert r.status_code == 400, (body, r.text)


def worker_rss(srv) -> int:
    return psutil.Process(srv.proc.pid).memory_info().rss


def _cancel_mid_load(srv, big_model_dir):
    """Start a load and cancel it at its first progress event; None if the load won the race."""
    with srv.events() as stream:
        lines = stream.iter_lines()
        r = srv.post("/admin/load", {"path": str(big_model_dir), "dtype": "bfloat16", "chunk_size_mb": 1})
        assert r.status_code == 202
        seen = read_events(lines, lambda e: e["type"] == "progress")
        cancel = srv.post("/admin/cancel-load")
        if cancel.status_code == 409:  # the load finished before the cancel arrived or took effect
            read_events(lines, lambda e: e["type"] == "state" and e["state"] != "loading")
            return None
        assert cancel.status_code == 200, cancel.text
        events = read_events(lines, lambda e: e["type"] == "state" and e["state"] != "loading")
    return cancel, seen + events


def test_cancel_stops_the_load_frees_memory_and_keeps_the_previous_model(srv, llama_dir, big_model_dir):
    for _ in range(3):  # a fast machine may finish the load before the cancel arrives: try again
        srv.load_and_wait(llama_dir)
        assert chat_works(srv, "tiny-llama")  # the first reply's one-off allocations belong in the baseline
        time.sleep(0.5)
        before = worker_rss(srv)
        outcome = _cancel_mid_load(srv, big_model_dir)
        if outcome is not None:
            break
    else:
        pytest.fail("every load finished before its cancel arrived")
    cancel, events = outcome
    assert cancel.json() == {"cancelled": True, "state": "ready", "model": "tiny-llama"}
    assert events[-1]["state"] == "ready" and events[-1]["cancelled"] is True
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["bytes_done"] < progress[-1]["bytes_total"]
    assert chat_works(srv, "tiny-llama")
    time.sleep(0.5)
    assert worker_rss(srv) - before < 30e6, "memory of the cancelled load was not returned"
    assert srv.post("/admin/cancel-load").status_code == 409


def test_load_timeout_reports_an_error_and_keeps_the_previous_model(srv, llama_dir, big_model_dir):
    srv.load_and_wait(llama_dir)
    events = srv.load_and_wait(big_model_dir, load_timeout_s=0.001)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and "timed out after 0.001 s" in errors[-1]["message"]
    assert events[-1]["state"] == "ready" and events[-1]["model"] == "tiny-llama"


def test_second_load_while_loading_is_409_and_late_listener_gets_state_first(srv, big_model_dir, llama_dir):
    with srv.events() as first:
        lines = first.iter_lines()
        assert srv.post("/admin/load", {"path": str(big_model_dir), "dtype": "bfloat16", "chunk_size_mb": 1}).status_code == 202
        read_events(lines, lambda e: e["type"] == "state" and e["state"] == "loading")
        busy = srv.post("/admin/load", {"path": str(llama_dir)})
        with srv.events() as late:
            joined = read_events(late, lambda e: True)
        read_events(lines, lambda e: e["type"] == "state" and e["state"] != "loading")
    assert busy.status_code == 409
    assert joined[0]["type"] == "state"


def test_unload_returns_to_idle_and_health_503(srv, llama_dir):
    if httpx.get(srv.url + "/health").status_code != 200:
        srv.load_and_wait(llama_dir)
    r = srv.post("/admin/unload")
    assert r.status_code == 200 and r.json()["state"] == "idle"
    assert srv.wait_health(503, 10)["reason"] == "no model loaded"
