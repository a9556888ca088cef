"""``deepseek-engine serve``: the worker's HTTP server, configured from a TOML file and flags."""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import ConfigError, EngineConfig


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--config", help="TOML file (EngineConfig); flags below override it")
    p.add_argument("--model", help="model folder, or 'demo' for the fetched demo model")
    p.add_argument("--served-model-name", help="model id for clients (default: folder name)")
    p.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quantization", choices=["none", "int8", "int4", "auto"],
                   help="hold the weights quantized (auto: the smallest loss that fits the device)")
    p.add_argument("--max-context", type=int, help="cap the context length")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, help="also serve gRPC (deepseek.v1.Inference) on this port (0: a free one)")
    p.add_argument("--api-key", help="required as 'Authorization: Bearer KEY' (env: DEEPSEEK_ENGINE_API_KEY)")
    p.add_argument("--batching-mode", help="dynamic | continuous | sequential")
    p.add_argument("--max-batch-size", type=int, help="requests decoded together")
    p.add_argument("--max-wait-ms", type=float, help="dynamic mode: how long a batch may wait to fill")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond this get 429")
    p.add_argument("--request-timeout", type=float, help="seconds before a running request is ended")
    p.add_argument("--metrics-public", action="store_true", default=None, help="serve /metrics without the key")
    p.add_argument("--log-level", help="debug | info | warning | error")
    p.add_argument("--parent-pid", type=int, help="exit when this process ends (the desktop app sets it)")
    p.set_defaults(func=cmd_serve)


def serve_config(args) -> EngineConfig:
    """The TOML file (if any), then the flags given on top of it.

    Raises:
        ConfigError: a refused value, or ``--model demo`` before the demo model was fetched.
    """
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
        "model.quantization": args.quantization,
        "model.max_context": args.max_context,
        "server.host": args.host,
        "server.port": args.port,
        "server.grpc_port": args.grpc_port,
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


def cmd_serve(args) -> int:
    from engine.serve import run_server  # the server stack, and torch behind it, only for serve

    return run_server(serve_config(args))
