"""Export a tuned configuration so it runs elsewhere (torch-free; the CLI and the app share it).

    source = from_engine(url, key) | from_file("sweep.json#3") | ExportSource.from_sweep(record, 3)
    result = export(source, "vllm", Path("vllm.yaml"))   # -> ExportResult(paths, notes, command)

One module per format: ``engine_toml``, ``vllm``, ``compose`` (also ``compose-vllm``), ``llama``
(``llama-server`` and ``ollama``) and ``record``. Each returns the files' text; this module writes
them atomically. Every file states at its top what it came from and lists what did not map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.export import compose, engine_toml, llama, record, vllm
from engine.export.common import ExportResult, Note, Rendered, write_file, write_folder
from engine.export.source import ExportError, ExportSource, from_engine, from_file, from_record


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable[..., Rendered]
    folder: bool          # writes a folder (compose) rather than one file
    suggested: str        # default file or folder name
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("engine-toml", engine_toml.render, False, "engine.toml",
           "a complete, commented engine config (deepseek-engine serve --config FILE)"),
    Format("vllm", vllm.render, False, "vllm.yaml", "a YAML file for 'vllm serve --config FILE' and the same command line"),
    Format("compose", compose.render_engine, True, "deepseek-compose",
           "a Docker Compose folder: this engine, Prometheus and Grafana"),
    Format("compose-vllm", compose.render_vllm, True, "vllm-compose",
           "a Docker Compose folder: the official vLLM image with the exported YAML, Prometheus and Grafana"),
    Format("llama-server", llama.render_llama_server, False, "llama-server.sh",
           "llama.cpp's server command line (models imported from GGUF)"),
    Format("ollama", llama.render_ollama, False, "Modelfile",
           "an Ollama Modelfile and the server environment it needs (models imported from GGUF)"),
    Format("record", record.render, False, "run-record.json",
           "a JSON run record: model, hardware, software, config, latest figures"),
)}


def render(source: ExportSource, fmt: str, **options: Any) -> Rendered:
    """The files of ``fmt`` as text, without writing anything.

    Raises:
        ExportError: an unknown format, or a source this format cannot express.
    """
    try:
        spec = FORMATS[fmt]
    except KeyError:
        raise ExportError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}") from None
    return spec.render(source, **options)


def export(source: ExportSource, fmt: str, out: Path, **options: Any) -> ExportResult:
    """Render ``fmt`` and write it to ``out`` (a file, or a folder for compose formats), atomically.

    Raises:
        ExportError: the format cannot express the source, or ``out`` cannot be written; nothing is
            left behind.
    """
    rendered = render(source, fmt, **options)
    out = Path(out)
    if FORMATS[fmt].folder:
        paths = write_folder(out, rendered.files)
    else:
        (text,) = rendered.files.values()
        paths = [write_file(out, text)]
    return ExportResult(paths=paths, notes=rendered.notes, command=rendered.command)


__all__ = ["FORMATS", "ExportError", "ExportResult", "ExportSource", "Note", "export", "from_engine", "from_file",
           "from_record", "render"]
