"""The chat history store: SQLite in WAL mode; a reply cut off by a crash survives, marked."""

import json
import sqlite3

from deepseek_desktop.state.chat_store import ChatStore, new_id


def _message(conversation_id, position, role, content, status="done"):
    return {"id": new_id(), "conversation_id": conversation_id, "position": position, "role": role,
            "content": content, "status": status}


def test_store_is_wal_and_keeps_conversations_and_messages_in_order(tmp_path):
    store = ChatStore(tmp_path / "chats.sqlite3")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cid = new_id()
    store.create_conversation(cid, "About cats", "be brief", {"temperature": 0.2})
    store.save_message(_message(cid, 1, "assistant", "They purr."))
    store.save_message(_message(cid, 0, "user", "Tell me about cats"))
    assert [m["content"] for m in store.messages(cid)] == ["Tell me about cats", "They purr."]
    assert store.conversations()[0]["settings"] == {"temperature": 0.2}
    store.update_conversation(cid, title="Cats")
    assert store.conversations()[0]["title"] == "Cats"


def test_search_matches_titles_and_message_text(tmp_path):
    store = ChatStore(tmp_path / "chats.sqlite3")
    a, b = new_id(), new_id()
    store.create_conversation(a, "Rust lifetimes")
    store.create_conversation(b, "Dinner")
    store.save_message(_message(b, 0, "user", "a recipe with SAFFRON rice"))
    assert [c["id"] for c in store.conversations("lifetimes")] == [a]
    assert [c["id"] for c in store.conversations("saffron")] == [b]
    assert store.conversations("nothing like this") == []


def test_truncate_and_delete_cascade(tmp_path):
    store = ChatStore(tmp_path / "chats.sqlite3")
    cid = new_id()
    store.create_conversation(cid, "t")
    for i, role in enumerate(["user", "assistant", "user", "assistant"]):
        store.save_message(_message(cid, i, role, f"m{i}"))
    store.truncate(cid, 2)
    assert [m["content"] for m in store.messages(cid)] == ["m0", "m1"]
    store.delete_conversation(cid)
    assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_a_reply_still_streaming_when_the_app_died_reopens_as_interrupted(tmp_path):
    path = tmp_path / "chats.sqlite3"
    store = ChatStore(path)
    cid = new_id()
    store.create_conversation(cid, "t")
    store.save_message(_message(cid, 0, "assistant", "half a rep", status="streaming"))
    # No close(): the process is gone as far as SQLite knows; a second connection reads the WAL.
    reopened = ChatStore(path)
    [message] = reopened.messages(cid)
    assert message["status"] == "interrupted" and message["content"] == "half a rep"
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_long_replies_are_drawn_in_chunks_that_end_at_paragraph_breaks_outside_code():
    from deepseek_desktop.widgets.message import chunk_end

    para = "word " * 100 + "\n\n"            # 502 characters
    code = "```\n" + "x = 1\n\n" * 300 + "```\n\n"  # a code block with blank lines inside
    text = para * 6 + code + para * 2
    cut = chunk_end(text, 0)
    assert cut == 3 * len(para) and text[:cut].endswith("\n\n")  # 4 would pass 2,000 characters
    assert chunk_end(text, 6 * len(para)) is None  # the code block starts here and is longer than a chunk
    assert chunk_end(para * 3, 0) is None  # shorter than a chunk: one piece


def test_a_grounded_replys_citations_are_kept_and_an_older_history_gains_the_column(tmp_path):
    path = tmp_path / "chats.sqlite3"
    # A history written before citations existed: the messages table without that column.
    _write_old_history(path, "hello")
    store = ChatStore(path)
    assert store.messages("c")[0]["citations"] == []
    cited = [{"n": 1, "collection": "docs", "path": "/d/a.md", "title": "A", "heading": "Intro", "page": None,
              "lines": [3, 9], "snippet": "the <mark>answer</mark>"}]
    store.save_message({**_message("c", 1, "assistant", "It is so [1]."), "citations": cited})
    store.close()
    assert ChatStore(path).messages("c")[1]["citations"] == cited


def test_tool_calls_and_results_are_kept_and_an_older_history_gains_their_columns(tmp_path):
    path = tmp_path / "chats.sqlite3"
    # A history from before tool calls: the messages table with citations but without their columns.
    _write_old_history(path, "weather?", ", citations TEXT NOT NULL DEFAULT '[]'", ", '[]'")
    store = ChatStore(path)
    assert store.messages("c")[0]["tool_calls"] == [] and store.messages("c")[0]["tool_call_id"] == ""
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
    store.save_message({**_message("c", 1, "assistant", ""), "tool_calls": calls})
    store.save_message({**_message("c", 2, "tool", '{"sky": "sunny"}'), "tool_call_id": "call_1"})
    store.update_conversation("c", settings={"json_schema": None, "tools": [{"type": "function", "function": {
        "name": "get_weather"}}], "tool_choice": "required"})
    store.close()
    again = ChatStore(path)
    kept = again.messages("c")
    assert kept[1]["tool_calls"] == calls and (kept[2]["role"], kept[2]["tool_call_id"]) == ("tool", "call_1")
    assert again.conversations()[0]["settings"]["tool_choice"] == "required"


def test_a_pasted_schema_or_tool_list_is_checked_with_a_message_that_says_what_is_wrong():
    import pytest

    from deepseek_desktop.state.chat_tools import SettingsProblem, parse_json_schema, parse_tools

    assert parse_json_schema("  ") is None
    assert parse_json_schema('{"type": "object"}') == {"name": "reply", "schema": {"type": "object"}}
    assert parse_json_schema('{"name": "p", "schema": {"type": "object"}}') == {"name": "p", "schema": {"type": "object"}}
    for text, says in [('{"type": ', "not valid JSON: Expecting value at line 1, column 10"),
                       ('{"type": "objec"}', "does not follow JSON Schema"), ("[1]", "must be a JSON object"),
                       ('{"name": "a b", "schema": {}}', "letters, digits")]:
        with pytest.raises(SettingsProblem, match=says):
            parse_json_schema(text)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert parse_tools(json.dumps([tool])) == [tool] and parse_tools(json.dumps(tool["function"])) == [tool]
    for value, says in [([{"function": {}}], "needs a function with a name"), ([tool, tool], "used twice"),
                        ([{"name": "search_documents"}], "built-in"),
                        ([{"name": "g", "parameters": {"type": 5}}], "parameters does not follow JSON Schema")]:
        with pytest.raises(SettingsProblem, match=says):
            parse_tools(json.dumps(value))


def _write_old_history(path, text: str, extra_columns: str = "", extra_values: str = "") -> None:
    """A chat history of an older layout: one conversation 'c' with one user message ``text``;
    ``extra_columns``/``extra_values`` add the messages columns that layout already had."""
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, system_prompt TEXT NOT NULL "
        "DEFAULT '', settings TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL);"
        "CREATE TABLE messages (id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, position INTEGER NOT NULL, "
        "role TEXT NOT NULL, content TEXT NOT NULL DEFAULT '', reasoning TEXT NOT NULL DEFAULT '', status TEXT "
        f"NOT NULL DEFAULT 'done', stats TEXT NOT NULL DEFAULT '{{}}', created REAL NOT NULL{extra_columns});"
        "INSERT INTO conversations VALUES ('c', 'old', '', '{}', 1, 1);"
        f"INSERT INTO messages VALUES ('m', 'c', 0, 'user', '{text}', '', 'done', '{{}}', 1{extra_values});")
    old.commit()
    old.close()
