"""The engine as a library, in-process: load, generate, health when the loop dies, unload."""

import threading

import pytest

from engine import Engine, EngineConfig, SamplingParams
from engine.requests import FinishEvent, TextEvent


@pytest.fixture
def engine(llama_dir):
    engine = Engine(EngineConfig.from_dict({"model": {"path": str(llama_dir)}}))
    engine.load()
    yield engine
    engine.unload()


def test_generate_text_yields_text_then_finish(engine):
    events = list(engine.generate_text("Hello", SamplingParams(max_new_tokens=6, temperature=0, ignore_eos=True)))
    assert isinstance(events[-1], FinishEvent) and events[-1].completion_tokens == 6
    assert events[-1].finish_reason == "length"
    assert all(isinstance(e, TextEvent) for e in events[:-1])


def test_health_reports_a_dead_generation_loop(engine):
    assert engine.health() == (True, "ok")
    engine.scheduler.stop()
    assert engine.health() == (False, "generation loop is not running")


def test_unload_returns_to_idle(engine):
    engine.unload()
    assert engine.state == "idle" and not engine.ready
    assert engine.health() == (False, "no model loaded")


def test_load_failure_is_reported_in_state(tmp_path):
    from engine.core import ModelProblem

    engine = Engine(EngineConfig.from_dict({"model": {"path": str(tmp_path)}}))
    with pytest.raises(ModelProblem, match="not a model folder: no config.json"):
        engine.load()
    assert engine.state == "error" and "config.json" in engine.health()[1]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_engine_loader_gives_the_same_weights_as_from_pretrained(big_model_dir, dtype):
    """The loader releases converted source pages as it goes; the weights must not change."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.config import LoadConfig, ModelConfig
    from engine.runtime.loader import load_model

    events = []
    ours = load_model(ModelConfig(path=str(big_model_dir), dtype=dtype), LoadConfig(chunk_size_mb=8),
                      emit=events.append).model
    plain = AutoModelForCausalLM.from_pretrained(big_model_dir, dtype=getattr(torch, dtype))
    theirs = plain.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert events[-1]["bytes_done"] == events[-1]["bytes_total"]
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(ours.generate(ids, max_new_tokens=5, do_sample=False),
                       plain.generate(ids, max_new_tokens=5, do_sample=False))


@pytest.mark.parametrize("mode", ["dynamic", "sequential", "continuous"])
def test_metrics_split_the_models_memory_into_weights_and_live_kv(llama_dir, mode):
    """What the Monitor draws as the model's weights/KV split, read back from /metrics text while
    a request is generating (from its own stream, so the moment is certain) and after."""
    import json

    from engine.telemetry.engine_metrics import _label, _value, parse

    engine = Engine(EngineConfig.from_dict({"model": {"path": str(llama_dir)}, "batching": {"mode": mode},
                                            "cache": {"type": "none"}}))
    engine.load()
    try:
        config = json.loads((llama_dir / "config.json").read_text())
        head_dim = config["hidden_size"] // config["num_attention_heads"]
        per_token = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * 4  # fp32
        prompt = engine.encode_text("Hello there, how are you")
        seen, done = [], threading.Event()

        def sink(event):
            if isinstance(event, TextEvent) and not seen:  # on the generation thread, mid-request
                seen.append(parse(engine.metrics.render().decode()))
            if isinstance(event, FinishEvent):
                done.set()

        engine.submit(prompt, SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True), sink)
        assert done.wait(30) and seen
        during = seen[0]
        kv = _value(during, "engine_kv_cache_bytes")
        after = parse(engine.metrics.render().decode())
        if mode == "continuous":  # the block pool, reserved whole at start and kept
            assert kv == _value(after, "engine_kv_cache_bytes") >= (len(prompt) + 40) * per_token
        else:
            assert len(prompt) * per_token <= kv <= (len(prompt) + 40) * per_token, (kv, per_token)
            assert _value(after, "engine_kv_cache_bytes") == 0  # released with the request
        weights = _value(after, "engine_model_weights_bytes")
        on_disk = sum(p.stat().st_size for p in llama_dir.glob("*.safetensors"))
        assert _label(after, "engine_model_weights_bytes", "device") == "cpu"
        assert abs(weights - on_disk) < 0.05 * on_disk, (weights, on_disk)  # fp32 on disk and in memory
    finally:
        engine.unload()
    assert "engine_model_weights_bytes" not in parse(engine.metrics.render().decode())


@pytest.mark.parametrize("mode", ["sequential", "dynamic", "continuous"])
def test_load_returns_its_outcome_and_every_scheduler_meets_the_protocol(llama_dir, mode):
    from engine.scheduling import Scheduler, ServedModel
    from engine.states import ModelState

    engine = Engine(EngineConfig.from_dict({"model": {"path": str(llama_dir)}, "batching": {"mode": mode}}))
    outcome = engine.load()
    try:
        assert outcome.loaded and outcome.model is engine.loaded and outcome.state == ModelState.READY
        assert not (outcome.cancelled or outcome.timed_out) and engine.wait_load(0) == outcome
        assert isinstance(engine.loaded, ServedModel) and isinstance(engine.scheduler, Scheduler)
        assert engine.scheduler.mode == mode and engine.scheduler.warning is None
        assert engine.cancel_load() is False  # nothing is loading: nothing to cancel
    finally:
        engine.unload()


@pytest.mark.parametrize("mode", ["sequential", "dynamic", "continuous"])
def test_a_request_cancelled_while_queued_still_ends_with_one_finish(llama_dir, mode):
    """Every request ends with exactly one last event, also one whose client left before it ran:
    the API faces (and the circuit breaker behind them) wait for it."""
    import queue

    from engine.requests import ErrorEvent

    engine = Engine(EngineConfig.from_dict({"model": {"path": str(llama_dir)},
                                            "batching": {"mode": mode, "max_batch_size": 1}}))
    engine.load()
    try:
        running, waiting = queue.Queue(), queue.Queue()
        first = engine.submit([5, 6, 7], SamplingParams(max_new_tokens=400, temperature=0, ignore_eos=True),
                              running.put)
        assert isinstance(running.get(timeout=30), TextEvent)  # it runs: the next one waits
        second = engine.submit([5, 6, 7], SamplingParams(max_new_tokens=4, temperature=0), waiting.put)
        second.cancel()
        first.cancel()
        for events in (running, waiting):
            event = events.get(timeout=30)
            while isinstance(event, TextEvent):
                event = events.get(timeout=30)
            assert isinstance(event, FinishEvent) and event.finish_reason == "cancelled", event
            with pytest.raises(queue.Empty):  # nothing after the last event
                events.get(timeout=0.3)
        assert not isinstance(event, ErrorEvent) and event.completion_tokens == 0
    finally:
        engine.unload()
