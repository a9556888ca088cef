"""A request that leaves sampling settings out takes the model's own (its generation_config.json),
as transformers and vLLM do; the API's defaults only otherwise (issue 19). Torch-free."""

import json

import pytest

from engine.catalog import sampling_defaults
from engine.demo import DEMO_SAMPLING, write_sampling_defaults
from engine.protocol import ChatCompletionRequest
from engine.service.gateway import sampling_params

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_only_the_sampling_settings_a_model_states_are_its_defaults(tmp_path):
    assert sampling_defaults(tmp_path) == {}  # no generation_config.json
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "bos_token_id": 1,
         "repetition_penalty": 99.0}))  # out of the API's range: not used
    assert sampling_defaults(tmp_path) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    (tmp_path / "generation_config.json").write_text("{broken")
    assert sampling_defaults(tmp_path) == {}


def test_presets_the_catalog_and_the_api_take_the_same_sampling_ranges():
    """One table of ranges (engine.requests.SAMPLING_BOUNDS): a preset or a model's file never
    holds a value the API would refuse."""
    from pydantic import ValidationError

    from engine.presets import SamplingDefaults
    from engine.requests import SAMPLING_BOUNDS, within_sampling_bounds

    refused = {"temperature": 2.5, "top_p": 0.0, "top_k": -2, "max_tokens": -1, "repetition_penalty": 50.0,
               "frequency_penalty": -3.0, "presence_penalty": 3.0, "seed": -1}
    assert set(refused) == set(SAMPLING_BOUNDS)
    for name, value in refused.items():
        assert not within_sampling_bounds(name, value), name
        with pytest.raises(ValidationError, match=name):
            ChatCompletionRequest(model="m", messages=MESSAGES, **{name: value})
        with pytest.raises(ValidationError, match=name):
            SamplingDefaults(**{name: value})
    taken = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 1, "repetition_penalty": 10.0,
             "frequency_penalty": -2.0, "presence_penalty": 2.0, "seed": 0}
    assert all(within_sampling_bounds(name, value) for name, value in taken.items())
    ChatCompletionRequest(model="m", messages=MESSAGES, **taken)
    assert SamplingDefaults(**taken).model_dump(exclude_none=True) == taken
    # The chat's "as the context allows" (0) is a preset without max_tokens, as a request says it.
    assert SamplingDefaults(max_tokens=0).max_tokens is None


def test_a_request_takes_the_models_settings_for_what_it_leaves_out():
    model = {"temperature": 0.2, "top_p": 0.5}
    left_out = sampling_params(ChatCompletionRequest(model="m", messages=MESSAGES), 16, model)
    assert (left_out.temperature, left_out.top_p, left_out.top_k) == (0.2, 0.5, 0)
    chosen = sampling_params(ChatCompletionRequest(model="m", messages=MESSAGES, temperature=1.0, top_p=1.0), 16, model)
    assert (chosen.temperature, chosen.top_p) == (1.0, 1.0)  # asked for, even at the API's default value
    plain = sampling_params(ChatCompletionRequest(model="m", messages=MESSAGES), 16, {})
    assert (plain.temperature, plain.top_p) == (1.0, 1.0)  # a model without settings: the API's defaults


def test_the_demo_folder_gets_its_sampling_settings_and_keeps_what_is_there(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "top_p": 0.8}))
    write_sampling_defaults(tmp_path)
    config = json.loads((tmp_path / "generation_config.json").read_text())
    assert config == {**DEMO_SAMPLING, "bos_token_id": 1, "top_p": 0.8}
    assert sampling_defaults(tmp_path) == {"temperature": 0.2, "top_p": 0.8}


@pytest.mark.slow
def test_the_demos_first_answer_without_sampling_fields_names_paris(demo_fetch):
    """What the app sends for a new user's first question (no temperature, no top_p): the demo's
    own settings apply, and it answers right (at the engine's 1.0, or the app's former 0.7, it
    often told of "L'Étoile")."""
    import httpx

    from helpers import EngineServer

    base, result = demo_fetch
    assert result.returncode == 0, result.stderr[-2000:]
    folder = base / "SmolLM2-135M-Instruct"
    assert sampling_defaults(folder) == {"temperature": 0.2, "top_p": 0.5}
    with EngineServer(folder) as srv:
        for _ in range(3):
            body = {"model": "SmolLM2-135M-Instruct", "max_tokens": 12, "messages": MESSAGES}
            reply = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=300)
            assert "Paris" in reply.json()["choices"][0]["message"]["content"]
