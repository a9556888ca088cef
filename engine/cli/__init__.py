"""``deepseek-engine``, the worker's command line; one module per group of commands:

    serve      serve.py     the OpenAI-compatible HTTP server
    models     models.py    list models in folders, the Hugging Face cache and .gguf files
    inspect    models.py    a model's catalog entry and memory estimate
    bench      bench.py     load-test any OpenAI-compatible server
    tune       tune.py      sweep batching/cache settings of a running server, recommend the best
    monitor    monitor.py   record GPU, host and engine telemetry to CSV
    export     export.py    a configuration as engine TOML, vLLM, Compose, llama-server, Ollama, run record
    doctor     doctor.py    what stops a model running here (driver, CUDA, memory, disk, port), what to do
    index, search
               search.py    the document index without a server
    fetch-demo, import-gguf, reshard
               jobs.py      jobs that write a model folder

Only ``serve`` and the jobs import torch, and only when they run: ``--help`` and the torch-free
commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from engine.cli import bench, doctor, export, jobs, models, monitor, search, serve, tune
from engine.config import ConfigError

DESCRIPTION = "deepseek-engine: serve | models | inspect | bench | tune | monitor | export | doctor | index | search | fetch-demo | import-gguf | reshard."

# In the order ``deepseek-engine --help`` lists them.
COMMANDS = (serve.add_serve, jobs.add_fetch_demo, jobs.add_import_gguf, models.add_models, models.add_inspect,
            bench.add_bench, tune.add_tune, monitor.add_monitor, export.add_export, search.add_index, search.add_search,
            doctor.add_doctor, jobs.add_reshard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-engine", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; its exit code (2 for a refused configuration, 130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
