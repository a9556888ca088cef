"""Tool calls: the parsers of each family's format, and a real engine driven by the openai SDK
and LangChain. The tiny model never calls a tool by itself: ``tool_choice`` required or named is
decoded under the call's grammar, so the call comes every time. Its ChatML template knows no
tools: they reach it in a Hermes-style system message."""

import json
from typing import Literal

import httpx
import pytest

from engine.tool_calls import (
    DeepSeekFormat,
    HermesFormat,
    HermesSystemMessage,
    Llama3JsonFormat,
    plan_tools,
    tool_format,
)
from engine.tool_call_stream import ToolCallStream

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


# ---------------------------------------------------------------------------- formats (no engine)

def test_each_family_is_told_from_its_template():
    assert isinstance(tool_format("{{ '<tool_call>' }}{% if tools %}{% endif %}"), HermesFormat)  # Qwen2.5
    assert isinstance(tool_format("{{'<｜tool▁calls▁begin｜>'}}"), DeepSeekFormat)
    assert isinstance(tool_format("{{- '<|python_tag|>' }} Environment: ipython"), Llama3JsonFormat)
    assert isinstance(tool_format("{% for m in messages %}{{ m.content }}{% endfor %}"), HermesSystemMessage)


def test_hermes_blocks_parse_and_plain_text_stays_text():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
            '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
    content, calls = HermesFormat().parse(text)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 2}), ("get_time", {"zone": "CET"})]
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id
    assert HermesFormat().parse("no <tool_call> here {") == ("no <tool_call> here {", [])


def test_llama3_json_calls_parse():
    content, calls = Llama3JsonFormat().parse('<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}; '
                                              '{"name": "get_weather", "parameters": {"city": "Rome", "days": 1}}')
    assert content == "" and [c.name for c in calls] == ["get_time", "get_weather"]
    assert Llama3JsonFormat().parse("The answer is {x}.") == ("The answer is {x}.", [])


def test_deepseek_calls_parse_in_both_forms():
    v3 = ("Sure<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
          '{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    content, calls = DeepSeekFormat().parse(v3)
    assert content == "Sure" and calls[0].name == "get_weather" and json.loads(calls[0].arguments)["days"] == 3
    v31 = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"zone": "UTC"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    assert [(c.name, c.arguments) for c in DeepSeekFormat().parse(v31)[1]] == [("get_time", '{"zone": "UTC"}')]


def _streamed(fmt, text: str, size: int, single_call: bool = False) -> tuple[str, dict, int]:
    """(text streamed, {index: (id, name, arguments joined)}, pieces) of ``text`` pushed ``size``
    characters at a time, as a client joins the pieces."""
    reader = ToolCallStream(fmt, single_call)
    steps = [reader.push(text[i:i + size]) for i in range(0, len(text), size)] + [reader.finish()]
    calls: dict = {}
    for piece in (piece for step in steps for piece in step.calls):
        call_id, name, arguments = calls.get(piece.index, (None, None, ""))
        assert (piece.name is None) == (piece.index in calls), "the name comes once, in the first piece"
        calls[piece.index] = (call_id or piece.id, name or piece.name, arguments + piece.arguments)
    return "".join(step.text for step in steps), calls, sum(len(step.calls) for step in steps)


def test_stream_holds_back_from_the_opening_marker():
    text = 'Checking <tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    streamed, calls, _ = _streamed(HermesFormat(), text, 4)
    assert streamed == "Checking " and [(name, args) for _, name, args in calls.values()] == [
        ("get_time", '{"zone": "UTC"}')]
    assert _streamed(HermesFormat(), "a <toolbox> b", 4)[0] == "a <toolbox> b"


@pytest.mark.parametrize("fmt, text", [
    (HermesFormat(), 'Let me see.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": '
                     '{"from": 2}}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}'
                     '\n</tool_call>'),
    (Llama3JsonFormat(), '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "days": {"from": 2}}}; '
                         '{"name": "get_time", "parameters": {"zone": "CET"}}'),
    (DeepSeekFormat(), "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                       '{"city": "Paris", "days": {"from": 2}}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function'
                       '<｜tool▁sep｜>get_time\n```json\n{"zone": "CET"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'),
    (DeepSeekFormat(), '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "days": '
                       '{"from": 2}}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"zone": "CET"}'
                       '<｜tool▁call▁end｜><｜tool▁calls▁end｜>'),
])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_calls_stream_in_pieces_that_join_to_the_parsed_calls(fmt, text, size):
    _, calls, pieces = _streamed(fmt, text, size)
    parsed = fmt.parse(text)[1]
    # The texts here write arguments as json.dumps does, so the pieces join to the parsed text exactly.
    assert [(name, args) for _, name, args in calls.values()] == [(call.name, call.arguments) for call in parsed]
    assert all(call_id.startswith("call_") for call_id, _, _ in calls.values())
    assert pieces > 2 * len(parsed), "the arguments came whole"
    _, first_only, _ = _streamed(fmt, text, size, single_call=True)
    assert [name for _, name, _ in first_only.values()] == ["get_weather"]


def test_a_call_written_arguments_first_still_comes_whole_at_the_end():
    text = 'x <tool_call>\n{"arguments": {"zone": "UTC"}, "name": "get_time"}\n</tool_call>'
    streamed, calls, _ = _streamed(HermesFormat(), text, 5)
    assert streamed == "x " and [(name, json.loads(args)) for _, name, args in calls.values()] == [
        ("get_time", {"zone": "UTC"})]


def test_a_template_without_tools_gets_them_in_a_system_message_and_past_calls_as_text():
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    plan = plan_tools("{{ messages }}", messages, [WEATHER], None, True)
    assert plan.messages[0]["role"] == "system" and '"get_weather"' in plan.messages[0]["content"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}' in plan.messages[2]["content"]
    assert plan.messages[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    assert plan.template_tools is None and plan.constraint is None
    native = plan_tools("{% if tools %}<tool_call>{% endif %}", messages, [WEATHER], [WEATHER["function"]], True)
    assert native.template_tools == [WEATHER] and native.messages[1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Paris", "days": 1}  # templates write the arguments with tojson
    assert native.constraint.prefix == "<tool_call>\n"


# ---------------------------------------------------------------------------- a real engine

MODEL = "tiny-llama-tools"


@pytest.fixture(scope="module")
def srv(model_root, tokenizer_dir):
    """The tiny Llama with room for the tools' system message (the tiny tokenizer spells it in
    ~800 tokens; the shared tiny models have a context of 256)."""
    import tiny_models
    from helpers import EngineServer

    folder = tiny_models.build_model("llama", model_root / MODEL, tokenizer_dir, max_position_embeddings=2048)
    with EngineServer(folder) as server:
        yield server


@pytest.fixture
def client(srv):
    from openai import OpenAI

    return OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0, timeout=120)


@pytest.mark.parametrize("choice, name", [("required", None), ({"type": "function", "function": {"name": "get_time"}},
                                                                "get_time")])
def test_required_and_named_tool_choice_always_call(client, choice, name):
    for seed in range(2):
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER, TIME],
                                               tool_choice=choice, max_tokens=200, temperature=0.9, seed=seed)
        choice_body = reply.choices[0]
        assert choice_body.finish_reason == "tool_calls", choice_body.message
        call = choice_body.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == (name or call.function.name) and call.function.name in ("get_weather", "get_time")
        schema = (WEATHER if call.function.name == "get_weather" else TIME)["function"]["parameters"]
        import jsonschema

        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_a_round_trip_with_the_sdk(client):
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER],
                                           tool_choice="required", max_tokens=200, temperature=0)
    message = first.choices[0].message
    call = message.tool_calls[0]
    follow_up = MESSAGES + [message.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"}]
    final = client.chat.completions.create(model=MODEL, messages=follow_up, tools=[WEATHER],
                                           tool_choice="auto", max_tokens=12, temperature=0)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert isinstance(final.choices[0].message.content, str) and not final.choices[0].message.tool_calls
    assert final.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result are in the prompt


def test_streamed_tool_calls_are_reassembled_by_the_sdk(client):
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES, tools=[WEATHER],
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        max_tokens=200, temperature=0) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] in ("Paris", "Rome")


def test_streamed_arguments_come_in_pieces_after_the_calls_name(srv):
    """As OpenAI streams them: the first piece has the call's id and name, the next add argument
    text; joined, they are the arguments of the same request unstreamed."""
    body = {"model": MODEL, "messages": MESSAGES, "tools": [WEATHER], "max_tokens": 200, "temperature": 0,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    whole = httpx.post(srv.url + "/v1/chat/completions", headers=srv.headers, timeout=120, json=body).json()
    pieces = []
    with httpx.stream("POST", srv.url + "/v1/chat/completions", headers=srv.headers, timeout=120,
                      json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    pieces += choice["delta"].get("tool_calls") or []
    assert pieces[0]["id"].startswith("call_") and pieces[0]["function"]["name"] == "get_weather"
    assert all("id" not in p and "name" not in p["function"] and p["index"] == 0 for p in pieces[1:])
    assert len(pieces) > 3, pieces
    expected = whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert "".join(p["function"]["arguments"] for p in pieces) == expected


def test_langchain_bind_tools_round_trip(srv):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_time(zone: Literal["UTC", "CET"]) -> str:
        """The time in a zone (UTC or CET)."""
        return "12:00"

    llm = ChatOpenAI(model=MODEL, base_url=srv.url + "/v1", api_key=srv.api_key, temperature=0,
                     max_tokens=200, max_retries=0)
    forced = llm.bind_tools([get_time], tool_choice="get_time")
    history = [HumanMessage("What time is it?")]
    ai = forced.invoke(history)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_time" and "zone" in ai.tool_calls[0]["args"]
    history += [ai, ToolMessage(get_time.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])]
    final = llm.bind_tools([get_time], tool_choice="none").invoke(history)
    assert isinstance(final.content, str) and not final.tool_calls


@pytest.mark.parametrize("body, says", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
    ({"tool_choice": "required"}, "needs tools"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "cannot be combined with tools"),
    ({"tools": [WEATHER], "tool_choice": "required", "ignore_eos": True}, "cannot be combined with ignore_eos"),
])
def test_bad_tool_requests_are_refused(srv, body, says):
    r = httpx.post(srv.url + "/v1/chat/completions", headers=srv.headers, timeout=60,
                   json={"model": MODEL, "messages": MESSAGES, "max_tokens": 4, **body})
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text
