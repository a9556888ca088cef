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
