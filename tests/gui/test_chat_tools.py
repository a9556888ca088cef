"""The Chat's JSON-schema mode and tool calls against a real worker (the tiny long-context Llama
with a tiny embedder, the same worker as test_search_panel's, shared through the pool): a bad
schema is refused in place and the message stays unsent; a structured reply validates and is
drawn as indented JSON; a forced call is shown as a card, the pasted result goes back as a
``role: tool`` message and the model answers; the built-in ``search_documents`` runs the search
through the engine by itself; all of it is still there after a restart."""

from __future__ import annotations

import json
import uuid

import httpx
import jsonschema
import pytest

from helpers import wait_until
from search_docs import build_tiny_embedder

TIMEOUT_MS = 180_000  # a cap for a loaded 2-core machine; each wait ends when its condition holds
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
                   "additionalProperties": False}}}]


@pytest.fixture(scope="module")
def server(worker_pool, long_model_dir, tokenizer_dir, tmp_path_factory):
    # The same arguments as test_search_panel's search_server: one worker for both modules.
    embedder = build_tiny_embedder(tmp_path_factory.mktemp("tiny-bert"), tokenizer_dir)
    config = tmp_path_factory.mktemp("search-config") / "engine.toml"
    config.write_text(f'[search]\nembedding_model = "{embedder}"\n')
    return worker_pool.get(long_model_dir, "--config", str(config))


def open_chat(make_window, qtbot, server):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.model_id is not None and window.chat.send_button.isEnabled(), timeout=60_000)
    window.show_panel("Chat")
    window.chat.max_tokens.setValue(24)
    window.chat._apply_settings()
    return window, window.chat, window.session


def send(qtbot, chat, text: str) -> None:
    chat.composer.setPlainText(text)
    chat.send_button.click()


def settled(session, count: int):
    return lambda: len(session.messages) >= count and not session.busy and session.messages[-1]["status"] != "streaming"


def test_a_bad_schema_is_refused_in_place_and_a_good_one_gives_formatted_json(make_window, qtbot, server):
    window, chat, session = open_chat(make_window, qtbot, server)
    form = chat.reply_format
    chat.format_button.click()
    form.schema_edit.setPlainText('{"type": "object", "properties": {"age": {"type": "integr"}}}')
    send(qtbot, chat, "Who are you?")
    assert "does not follow JSON Schema" in form.problem.text() and form.problem.isVisible()
    assert chat.composer.toPlainText() == "Who are you?" and not session.busy  # nothing sent, nothing lost
    form.schema_edit.setPlainText('{"type": "object",')
    chat.send()
    assert "not valid JSON" in form.problem.text() and "line 1" in form.problem.text()
    assert form.schema_edit.toPlainText() == '{"type": "object",'

    form.schema_edit.setPlainText(json.dumps({"name": "person", "schema": PERSON}))
    chat.max_tokens.setValue(80)
    chat._apply_settings()
    chat.send()
    assert not form.problem.isVisible() and chat.format_button.text() == "JSON schema"
    qtbot.waitUntil(settled(session, 2), timeout=TIMEOUT_MS)
    reply = session.messages[-1]
    assert reply["status"] == "done", reply
    jsonschema.validate(json.loads(reply["content"]), PERSON)
    drawn = chat.widgets[reply["id"]].rendered_markdown()
    assert drawn.startswith("```json\n{\n  \"name\": "), drawn  # indented, as a JSON code block
    conversation = session.current["id"]
    window.close()

    again = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: (again.session.current or {}).get("id") == conversation, timeout=30_000)
    assert again.session.current["settings"]["json_schema"] == {"name": "person", "schema": PERSON}
    assert json.loads(again.chat.reply_format.schema_edit.toPlainText()) == {"name": "person", "schema": PERSON}


def test_a_tool_call_is_shown_its_pasted_result_goes_back_and_the_model_answers(make_window, qtbot, server):
    window, chat, session = open_chat(make_window, qtbot, server)
    form = chat.reply_format
    form.tools_edit.setPlainText(json.dumps(WEATHER))
    form.tool_choice.setCurrentIndex(form.tool_choice.findData("required"))  # the tiny model never calls by itself
    chat.max_tokens.setValue(60)
    chat._apply_settings()
    assert chat.apply_reply_format() and chat.format_button.text() == "Tools (1)"
    send(qtbot, chat, "Weather in Paris?")
    qtbot.waitUntil(settled(session, 2), timeout=TIMEOUT_MS)
    reply = session.messages[-1]
    [call] = reply["tool_calls"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"] in ("Paris", "Rome"), reply
    card = chat.widgets[reply["id"]].call_cards[call["id"]]
    assert card.title.text() == "Calls get_weather" and '"city"' in card.arguments.toPlainText()
    assert card.result_box.isVisible() and card.send_button.isEnabled()

    card.send_button.click()  # nothing pasted yet: nothing sent
    assert len(session.messages) == 2 and "first" in card.result_box.placeholderText()
    card.result_box.setPlainText('{"sky": "sunny", "celsius": 24}')
    card.send_button.click()
    qtbot.waitUntil(settled(session, 4), timeout=TIMEOUT_MS)
    roles = [m["role"] for m in session.messages]
    assert roles == ["user", "assistant", "tool", "assistant"], session.messages
    tool, final = session.messages[2], session.messages[3]
    assert tool["tool_call_id"] == call["id"] and tool["content"] == '{"sky": "sunny", "celsius": 24}'
    assert final["status"] == "done" and not final.get("tool_calls")  # after a result the model may answer
    assert not card.result_box.isVisible()
    assert chat.widgets[tool["id"]].role_label.text() == "Result of get_weather"
    conversation = session.current["id"]
    window.close()

    again = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: len(again.session.messages) == 4 and again.session.current["id"] == conversation,
                    timeout=30_000)
    kept = again.session.messages
    assert kept[1]["tool_calls"] == reply["tool_calls"] and kept[2]["tool_call_id"] == call["id"]
    body = again.session.request_body()  # the history goes back as the chat API wants it
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert body["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": tool["content"]}


def test_the_built_in_search_tool_runs_through_the_engine_by_itself(make_window, qtbot, server, tmp_path):
    (tmp_path / "rice.md").write_text("# Rice\n\nSaffron rice is cooked slowly in butter.\n")
    name = f"tools-{uuid.uuid4().hex[:8]}"
    created = httpx.post(server.url + "/admin/collections", headers=server.headers, timeout=30,
                         json={"name": name, "folders": [str(tmp_path)]})
    assert created.status_code == 201, created.text
    window, chat, session = open_chat(make_window, qtbot, server)
    qtbot.waitUntil(lambda: chat.documents_box.findData(name) >= 0, timeout=30_000)
    assert not chat.reply_format.search_tool_box.isEnabled()  # no documents chosen yet
    chat.documents_box.setCurrentIndex(chat.documents_box.findData(name))
    chat.documents_box.activated.emit(chat.documents_box.currentIndex())  # as a user's pick
    form = chat.reply_format
    assert form.search_tool_box.isEnabled()
    form.search_tool_box.setChecked(True)
    form.tool_choice.setCurrentIndex(form.tool_choice.findData("required"))
    chat.max_tokens.setValue(300)  # room for the call's query (at most 200 characters)
    chat._apply_settings()
    searches = sum(1 for e in server.logs() if e.get("path") == "/v1/search")
    send(qtbot, chat, "How is rice cooked?")
    qtbot.waitUntil(settled(session, 4), timeout=TIMEOUT_MS)
    call, tool = session.messages[1]["tool_calls"][0], session.messages[2]
    assert call["name"] == "search_documents" and tool["role"] == "tool" and tool["tool_call_id"] == call["id"]
    assert tool["content"].startswith("[1] ") or tool["content"] == "No passage matches.", tool["content"]
    assert session.messages[3]["role"] == "assistant" and session.messages[3]["status"] == "done"
    assert wait_until(lambda: sum(1 for e in server.logs() if e.get("path") == "/v1/search") > searches)
