"""``deepseek-engine index | search``: the document index without a server, on the same folder the
server uses (``[search] dir``, default <engine data folder>/search), so a server started later
serves what was indexed here. Lexical search imports no torch; semantic and hybrid load the
embedding model when the collection has vectors."""

from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path


def add_index(sub) -> None:
    p = sub.add_parser("index", help="index folders into a search collection (created if new), with a progress bar")
    p.add_argument("--collection", required=True, help="collection name (1-64 of A-Z a-z 0-9 _ . -)")
    p.add_argument("--dir", action="append", default=[], dest="dirs", metavar="DIR",
                   help="a folder to index (repeat for several; replaces the collection's folders)")
    p.add_argument("--include", action="append", default=None, metavar="GLOB", help="only files matching (repeatable)")
    p.add_argument("--exclude", action="append", default=None, metavar="GLOB", help="skip files matching (repeatable)")
    p.add_argument("--no-embed", action="store_true", help="lexical index only (no embedding model, no torch)")
    p.add_argument("--config", help="engine TOML whose [search] section names the index folder and embedding model")
    p.set_defaults(func=cmd_index)


def add_search(sub) -> None:
    p = sub.add_parser("search", help="search indexed documents (no server needed)")
    p.add_argument("query")
    p.add_argument("--collection", help="collection name (default: all)")
    p.add_argument("--mode", default="hybrid", choices=["lexical", "semantic", "hybrid"])
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--path-glob", help="only files whose absolute path matches this glob")
    p.add_argument("--json", action="store_true", help="the API's JSON body instead of text")
    p.add_argument("--config", help="engine TOML whose [search] section names the index folder and embedding model")
    p.set_defaults(func=cmd_search)


def _service(args, threads=None):
    from engine.config import EngineConfig
    from engine.search.service import SearchService

    settings = (EngineConfig.from_toml(args.config) if args.config else EngineConfig()).search
    service = SearchService(Path(settings.dir) if settings.dir else None, settings.embedding_model, threads=threads)
    if service.store.notice:
        print(f"warning: {service.store.notice}", file=sys.stderr)
    return service


def cmd_index(args) -> int:
    from engine.search.store import StoreError, UnknownCollection

    service = _service(args)
    store = service.store
    try:
        try:
            store.collection(args.collection)
            if args.dirs or args.include is not None or args.exclude is not None:
                store.update_collection(args.collection, args.dirs or None, args.include, args.exclude)
        except UnknownCollection:
            if not args.dirs:
                print(f"error: collection {args.collection!r} is new: give its folders with --dir", file=sys.stderr)
                return 1
            store.create_collection(args.collection, args.dirs, args.include or [], args.exclude or [])
        bar = ProgressBar(sys.stderr)
        summary = service.index(args.collection, embed=not args.no_embed, publish=bar.show)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.end()
    mb = summary.bytes_done / 1e6
    print(f"{args.collection}: {summary.indexed} file(s) indexed, {summary.unchanged} unchanged, {summary.removed} removed, "
          f"{summary.chunks} chunks ({mb:.1f} MB read) in {summary.seconds:.1f} s"
          + (f"; {summary.embedded} chunks embedded in {summary.embed_seconds:.1f} s" if summary.embedded else ""))
    for path, reason in summary.problems:
        print(f"  problem: {path}: {reason}")
    if summary.state != "done":
        print(f"error: indexing {summary.state}", file=sys.stderr)
        return 1
    return 0


def cmd_search(args) -> int:
    from engine.search.embedder import EmbedderUnavailable
    from engine.search.store import StoreError

    if not 1 <= args.top_k <= 100:
        print("error: --top-k must be 1..100", file=sys.stderr)
        return 2
    service = _service(args, threads=1)  # one query: more threads only wait for each other
    try:
        result = service.search(args.query, args.collection, args.top_k, args.mode, args.path_glob)
    except (StoreError, EmbedderUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"hits": [h.public() for h in result.hits], "mode": result.mode, "took_ms": result.took_ms},
                         ensure_ascii=False, indent=2))
        return 0
    if result.mode != args.mode:
        print(f"({args.mode} is not ready for this collection yet: {result.mode} results)", file=sys.stderr)
    if not result.hits:
        print("no results")
    bold = sys.stdout.isatty()
    for number, hit in enumerate(result.hits, 1):
        where = f" p.{hit.page}" if hit.page else (f":{hit.lines[0]}-{hit.lines[1]}" if hit.lines else "")
        print(f"{number}. {hit.path}{where}" + (f"  [{hit.heading}]" if hit.heading else "") + f"  score {hit.score:.4g}")
        print(f"   {plain_snippet(hit.snippet, bold)}")
    return 0


def plain_snippet(snippet: str, bold: bool) -> str:
    on, off = ("\033[1m", "\033[0m") if bold else ("[", "]")
    return html.unescape(re.sub(r"</?mark>", lambda m: off if m.group().startswith("</") else on, snippet))


class ProgressBar:
    """``index_progress`` events as one line redrawn in place (a terminal) or a line every few
    seconds (a log)."""

    WIDTH = 24

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self._last_line = 0.0
        self._drawn = False

    def show(self, event: dict) -> None:
        if event.get("state") != "indexing":
            return
        if not self.tty and time.monotonic() - self._last_line < 2:
            return
        self._last_line = time.monotonic()
        if event.get("phase") == "embedding":
            done, total, what = event["embedded"], event["embed_total"], "chunks embedded"
        else:
            done, total, what = event["files_done"], event["files_total"], "files"
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        eta = f" ETA {event['eta_s']:.0f}s" if event.get("eta_s") is not None else ""
        current = event.get("current_file") or ""
        line = (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {share:4.0%} {done}/{total} {what}, "
                f"{event['chunks']} chunks, {event['chunks_per_s']:.0f}/s{eta}"
                + (f"  {Path(current).name}" if current else ""))
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
