"""The engine as a library, in-process: load, generate, health when the loop dies, unload."""

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
    engine._generator.stop()
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
