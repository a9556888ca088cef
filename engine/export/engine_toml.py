"""``engine-toml``: a complete, commented engine configuration.

The layout and every comment come from ``resources/engine.toml`` (the commented default that the
app and the README show too); each value is replaced by the one in force. ``serve --config`` on
the result gives the same ``GET /admin/config`` as the source. Secrets never leave: the API key
goes through ``DEEPSEEK_ENGINE_API_KEY``, named keys keep only ``key_env``/``key_sha256``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import tomli_w

from engine.config import EngineConfig
from engine.export.common import Note, Rendered, commented, header_lines
from engine.export.source import ExportSource
from engine.resources import read_resource

TEMPLATE = "resources/engine.toml"
COMMENT_COLUMN = 42
_KEY_LINE = re.compile(r"^(?P<off>#\s?)?(?P<key>[a-z_]+) = (?P<value>.*?)(?P<comment>\s{2,}#.*)?$")
_SECTION = re.compile(r"^\[(?P<name>[a-z_.]+)\]\s*(#.*)?$")


def render(source: ExportSource, **_options: Any) -> Rendered:
    config, notes = exportable(source.config)
    text = commented(header_lines(source, "deepseek-engine configuration: deepseek-engine serve --config FILE", notes))
    return Rendered(files={"engine.toml": text + "\n" + render_config(config)}, notes=notes)


def exportable(config: EngineConfig) -> tuple[EngineConfig, list[Note]]:
    """The config without what must not travel (secrets, the app's pid), and a note for each."""
    notes: list[Note] = []
    server = config.server
    if server.api_key:
        notes.append(Note("server.api_key", "never written to a file: set DEEPSEEK_ENGINE_API_KEY where it runs"))
    literal = [k.name for k in server.keys if k.key is not None]
    if literal:
        notes.append(Note("server.keys", f"{', '.join(literal)}: a literal key is never exported; give each a "
                                         "key_env or key_sha256 again"))
    if server.parent_pid is not None:
        notes.append(Note("server.parent_pid", "the desktop app's own process id; left out"))
    keys = [k for k in server.keys if k.key is None]
    clean = config.model_copy(update={"server": server.model_copy(update={"api_key": None, "parent_pid": None,
                                                                           "keys": keys})})
    return clean, notes


def render_config(config: EngineConfig, extra_tables: str = "") -> str:
    """The template with ``config``'s values in place; ``extra_tables`` (a preset's ``[sampling]``) at the end."""
    data = config.model_dump(mode="json", context={"reveal_secrets": True})
    out: list[str] = []
    section: Optional[str] = None
    seen: set[str] = set()
    for line in read_resource(TEMPLATE).splitlines():
        match = _SECTION.match(line)
        if match:
            out += _leftovers(data, section, seen)
            section, seen = match["name"], set()
            out.append(line)
            continue
        out.append(_fill(line, _table(data, section), seen))
    out += _leftovers(data, section, seen)
    return "\n".join(out).rstrip("\n") + "\n" + (("\n" + extra_tables) if extra_tables else "")


def _table(data: dict[str, Any], section: Optional[str]) -> Optional[dict[str, Any]]:
    table: Any = data
    for part in (section or "").split("."):
        if not part:
            return None
        table = table.get(part) if isinstance(table, dict) else None
    return table if isinstance(table, dict) else None


def _fill(line: str, table: Optional[dict[str, Any]], seen: set[str]) -> str:
    match = _KEY_LINE.match(line)
    if table is None or not match or match["key"] not in table or isinstance(table[match["key"]], list):
        return line
    key, value = match["key"], table[match["key"]]
    seen.add(key)
    if value is None:
        return line if match["off"] else _align(f"# {key} = {match['value']}", match["comment"])
    if isinstance(value, dict) and key in ("rate_limit", "circuit"):
        return line  # sub-tables are written as tables
    return _align(f"{key} = {toml_value(value)}", match["comment"])


def _align(text: str, comment: Optional[str]) -> str:
    if not comment:
        return text
    return text.ljust(COMMENT_COLUMN - 1) + " " + comment.strip()


def _leftovers(data: dict[str, Any], section: Optional[str], seen: set[str]) -> list[str]:
    """Settings the template has no line for: server's sub-tables, and any field newer than the template."""
    table = _table(data, section)
    if table is None:
        return []
    lines: list[str] = []
    for key, value in table.items():
        if key in seen or value is None or value == []:
            continue
        if section == "server" and key == "circuit":
            continue  # a section of the template of its own
        if section == "server" and key == "rate_limit":
            lines += ["[server.rate_limit]", *tomli_w.dumps(value).splitlines()]
        elif section == "server" and key == "keys":
            lines += _keys(value)
        elif not isinstance(value, dict):
            lines.append(f"{key} = {toml_value(value)}")
    if lines and section == "server":
        # Sub-tables after the section's own keys: put a blank line before them.
        lines.insert(0, "")
    while lines and lines[-1] == "":
        lines.pop()
    if lines:
        lines.append("")
    return lines


def _keys(keys: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for key in keys:
        limit = key.get("rate_limit")
        plain = {k: v for k, v in key.items() if v is not None and k != "rate_limit"}
        lines += ["[[server.keys]]", *tomli_w.dumps(plain).splitlines()]
        if limit:
            lines += ["[server.keys.rate_limit]", *tomli_w.dumps(limit).splitlines()]
    return lines


def toml_value(value: Any) -> str:
    """One TOML value on one line (tables inline)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")
