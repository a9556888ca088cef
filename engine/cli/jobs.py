"""``deepseek-engine fetch-demo | import-gguf | reshard``: jobs that write a model folder (they
import torch when they run). Each prints the folder it wrote as its last line of stdout, which the
desktop app reads; errors go to stderr with exit code 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def add_fetch_demo(sub) -> None:
    p = sub.add_parser("fetch-demo", help="fetch SmolLM2-135M-Instruct and convert it, and the search's embedding "
                                          "model (all-MiniLM-L6-v2) beside it; prints the chat model's folder last")
    p.add_argument("--dir", help="folder to put it in (default: the user's data folder)")
    p.set_defaults(func=cmd_fetch_demo)


def add_import_gguf(sub) -> None:
    p = sub.add_parser("import-gguf", help="convert a GGUF file into a safetensors model folder")
    p.add_argument("file", help="the .gguf file")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the float weights written (default float32; bfloat16 for a kept int4 class)")
    p.add_argument("--dequantize", action="store_true",
                   help="write float weights instead of keeping the file's precision class (Q8 -> int8, Q4/Q5 -> int4)")
    p.set_defaults(func=cmd_import_gguf)


def add_reshard(sub) -> None:
    p = sub.add_parser("reshard", help="rewrite a checkpoint into shards of at most --chunk-size MB")
    p.add_argument("path")
    p.add_argument("--chunk-size", type=float, required=True, help="MB per shard")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_reshard)


def print_made_folder(make: Callable[[], Path], expected_error: type[Exception]) -> int:
    """Run a command that writes a model folder: its path on stdout, or the error on stderr."""
    try:
        out = make()
    except expected_error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def cmd_fetch_demo(args) -> int:
    from engine.demo import DemoFetchError, fetch_demo

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        path, present = fetch_demo(Path(args.dir) if args.dir else None, log=progress)
    except DemoFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"demo model already present in {path}" if present else f"demo model ready in {path}")
    _fetch_embedder(path.parent, progress)
    print(path)
    return 0


def _fetch_embedder(folder: Path, progress) -> None:
    """The search's embedding model beside the chat model; without it search is lexical only,
    so a failure is a warning (the demo's folder stays the last line printed)."""
    from engine.search.embedder import EmbedderUnavailable, fetch_embedder

    try:
        embedder, present = fetch_embedder(folder, log=progress)
    except EmbedderUnavailable as exc:
        print(f"warning: no embedding model for semantic search: {exc}", file=sys.stderr)
        return
    print(f"embedding model already present in {embedder}" if present else f"embedding model ready in {embedder}")


def cmd_import_gguf(args) -> int:
    from engine.gguf_import import GGUFImportError, import_gguf, import_plan

    keep = not args.dequantize
    what = import_plan(Path(args.file), keep) if Path(args.file).is_file() else None
    if what:  # said before the work starts: the Models panel shows it as the job's step
        print(what, file=sys.stderr, flush=True)
    return print_made_folder(lambda: import_gguf(Path(args.file), Path(args.out), args.dtype, keep_precision=keep),
                             GGUFImportError)


def cmd_reshard(args) -> int:
    from engine.reshard import ReshardError, reshard

    return print_made_folder(lambda: reshard(Path(args.path), Path(args.out), args.chunk_size), ReshardError)
