"""``deepseek-engine export``: a tuned configuration as a file that runs elsewhere (torch-free)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def add_export(sub) -> None:
    from engine.export import FORMATS

    p = sub.add_parser("export", help="export a configuration: engine TOML, vLLM, Compose, llama-server, Ollama, record",
                       description="Export the configuration of a running engine, a config TOML, a sweep point "
                                   "(sweep.json#N) or a run record. Formats: "
                                   + "; ".join(f"{name}: {spec.description}" for name, spec in FORMATS.items()))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a running engine (ours, or any OpenAI-compatible server such as vLLM)")
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="config.toml (a preset too), sweep.json#N (point N of a sweep record) or record.json")
    p.add_argument("--api-key", help="the engine's key (env: DEEPSEEK_ENGINE_API_KEY)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="what to write")
    p.add_argument("--out", required=True, help="file to write (a folder for compose and compose-vllm)")
    p.add_argument("--model", metavar="PATH", help="set model.path (where the model lives on the target machine)")
    p.add_argument("--gguf", metavar="FILE", help="llama-server/ollama: the GGUF file the model was imported from")
    p.add_argument("--nodes", type=int, default=1, help="vllm: nodes (pipeline parallel, with Ray); default 1")
    p.add_argument("--gpus-per-node", type=int, help="vllm: GPUs per node (tensor parallel); default: what the model needs")
    p.add_argument("--figures", metavar="FILE", help="record: the bench --json or sweep record to attach as its figures")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from engine.export import ExportError, export, from_engine, from_file
    from engine.export.source import with_model_path

    try:
        if args.url:
            source = from_engine(args.url, args.api_key or os.environ.get("DEEPSEEK_ENGINE_API_KEY"))
        else:
            source = from_file(args.from_file)
        if args.model:
            source = with_model_path(source, args.model)
        if args.figures:
            source.figures = _figures(Path(args.figures))
        result = export(source, args.format, Path(args.out), gguf=args.gguf, nodes=args.nodes,
                        gpus_per_node=args.gpus_per_node)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = result.paths[0] if len(result.paths) == 1 else Path(args.out)
    print(f"exported {args.format} from {source.origin} to {where}", file=sys.stderr)
    for note in result.notes:
        print(f"  not mapped: {note.line()}", file=sys.stderr)
    if result.command:
        print(result.command)
    return 0


def _figures(path: Path) -> dict:
    from engine.export import ExportError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"--figures {path}: not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and "levels" in data:
        return {"bench": data}
    if isinstance(data, dict) and "points" in data:
        return {"sweep": data}
    raise ExportError(f"--figures {path}: neither a 'bench --json' file (levels) nor a sweep record (points)")
