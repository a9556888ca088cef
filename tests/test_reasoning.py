"""Reasoning models: text inside <think>…</think> comes back as reasoning_content, apart from content."""

import pytest

import tiny_models
from helpers import EngineServer


@pytest.fixture(scope="module")
def reasoning_client(model_root, tiny_model):
    """Qwen2 weights behind a DeepSeek-R1 style template that opens <think> for the model."""
    from openai import OpenAI

    folder = tiny_models.with_template(tiny_model("qwen2"), model_root / "tiny-r1", tiny_models.REASONING_TEMPLATE)
    with EngineServer(folder) as srv:
        yield OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0)


def test_open_think_block_goes_to_reasoning_content(reasoning_client):
    reply = reasoning_client.chat.completions.create(
        model="tiny-r1", messages=[{"role": "user", "content": "Why?"}], max_tokens=12, temperature=0,
        extra_body={"ignore_eos": True})
    message = reply.choices[0].message
    # The random model never closes the block, so everything it says is reasoning.
    assert message.reasoning_content and message.content == ""

    chunks = list(reasoning_client.chat.completions.create(
        model="tiny-r1", messages=[{"role": "user", "content": "Why?"}], max_tokens=12, temperature=0,
        stream=True, extra_body={"ignore_eos": True}))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == message.reasoning_content
    assert not any(c.choices[0].delta.content for c in chunks[1:] if c.choices)
