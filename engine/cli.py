"""``deepseek-engine``: serve | models | inspect | reshard | import-gguf | fetch-demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from engine.config import ConfigError, EngineConfig


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--config", help="TOML file (EngineConfig); flags below override it")
    p.add_argument("--model", help="model folder, or 'demo' for the fetched demo model")
    p.add_argument("--served-model-name", help="model id for clients (default: folder name)")
    p.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-context", type=int, help="cap the context length")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", help="required as 'Authorization: Bearer KEY' (env: DEEPSEEK_ENGINE_API_KEY)")
    p.add_argument("--batching-mode", help="dynamic | sequential")
    p.add_argument("--max-batch-size", type=int, help="requests decoded together")
    p.add_argument("--max-wait-ms", type=float, help="dynamic mode: how long a batch may wait to fill")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond this get 429")
    p.add_argument("--request-timeout", type=float, help="seconds before a running request is ended")
    p.add_argument("--metrics-public", action="store_true", default=None, help="serve /metrics without the key")
    p.add_argument("--log-level", help="debug | info | warning | error")
    p.add_argument("--parent-pid", type=int, help="exit when this process ends (the desktop app sets it)")
    p.set_defaults(func=_cmd_serve)


def _serve_config(args) -> EngineConfig:
    import os

    from engine.paths import demo_model_dir

    config = EngineConfig.from_toml(args.config) if args.config else EngineConfig()
    model = args.model
    if model == "demo":
        model = str(demo_model_dir())
        if not Path(model, "config.json").exists():
            raise ConfigError(f"the demo model is not in {model}: run 'deepseek-engine fetch-demo' first")
    return config.with_overrides({
        "model.path": model,
        "model.served_model_name": args.served_model_name,
        "model.dtype": args.dtype,
        "model.device": args.device,
        "model.max_context": args.max_context,
        "server.host": args.host,
        "server.port": args.port,
        "server.api_key": args.api_key or (None if config.server.api_key else os.environ.get("DEEPSEEK_ENGINE_API_KEY")),
        "server.metrics_public": args.metrics_public,
        "server.log_level": args.log_level,
        "server.parent_pid": args.parent_pid,
        "batching.mode": args.batching_mode,
        "batching.max_batch_size": args.max_batch_size,
        "batching.max_wait_ms": args.max_wait_ms,
        "batching.max_queue": args.max_queue,
        "batching.request_timeout_s": args.request_timeout,
    })


def _cmd_serve(args) -> int:
    from engine.serve import run_server

    return run_server(_serve_config(args))


def _add_fetch_demo(sub) -> None:
    p = sub.add_parser("fetch-demo", help="fetch SmolLM2-135M-Instruct and convert it; prints its folder last")
    p.add_argument("--dir", help="folder to put it in (default: the user's data folder)")
    p.set_defaults(func=_cmd_fetch_demo)


def _cmd_fetch_demo(args) -> int:
    from engine.demo import DemoFetchError, fetch_demo

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        path, present = fetch_demo(Path(args.dir) if args.dir else None, log=progress)
    except DemoFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"demo model already present in {path}" if present else f"demo model ready in {path}")
    print(path)
    return 0


def _add_import_gguf(sub) -> None:
    p = sub.add_parser("import-gguf", help="convert a GGUF file into a safetensors model folder")
    p.add_argument("file", help="the .gguf file")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.set_defaults(func=_cmd_import_gguf)


def print_made_folder(make, expected_error: type[Exception]) -> int:
    """Run a command that writes a model folder: its path on stdout, or the error on stderr."""
    try:
        out = make()
    except expected_error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _cmd_import_gguf(args) -> int:
    from engine.gguf_import import GGUFImportError, import_gguf

    return print_made_folder(lambda: import_gguf(Path(args.file), Path(args.out), args.dtype), GGUFImportError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_fetch_demo(sub)
    _add_import_gguf(sub)
    from engine import cli_models

    cli_models.add_commands(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
