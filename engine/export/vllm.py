"""``vllm``: a YAML file for ``vllm serve --config FILE`` (dash spelling, as vLLM's docs) and the same
as one command line. The README's "Export to vLLM" table is this module's ``MAPPING``.

What has a counterpart is mapped; what vLLM cannot express (the ``dynamic`` batcher's wait, a disk
tier without LMCache, queue and time limits, rate limits) is exported with the nearest setting
and the difference spelled out in the file's header. The API key never enters the file: vLLM
reads it from ``VLLM_API_KEY``.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Optional

import yaml

from engine.export.common import Note, Rendered, commented, header_lines
from engine.export.source import ExportError, ExportSource

# (engine setting, vLLM argument, how) — the table the README shows; a test checks it field by field.
MAPPING: list[tuple[str, str, str]] = [
    ("model.path", "model", "the same folder (or .gguf file)"),
    ("model.served_model_name", "served-model-name", "the same id in /v1/models"),
    ("model.dtype", "dtype", "auto, float32, bfloat16, float16"),
    ("model.max_context (or the loaded context length)", "max-model-len", "the same number of tokens"),
    ("model.trust_remote_code", "trust-remote-code", "only when true"),
    ("model.quantization (or a checkpoint saved quantized)", "quantization",
     "a saved method vLLM has (gptq, awq, fp8, compressed-tensors, bitsandbytes, torchao, gguf); int4 on a GPU: "
     "bitsandbytes (nf4, not torchao's int4); int8, auto and CPU loads: not mapped, the difference said"),
    ("batching.max_batch_size", "max-num-seqs", "requests decoded together; sequential mode: 1"),
    ("batching.max_batch_tokens", "max-num-batched-tokens", "token budget per step (continuous mode's, or its default: 512 CPU, 4096 GPU)"),
    ("batching.page_size", "block-size", "continuous mode, when set"),
    ("batching.num_blocks", "num-gpu-blocks-override", "continuous mode, when set"),
    ("cache.type / batching.block_sharing", "enable-prefix-caching", "on when the prefix cache (or block sharing in continuous mode) is on"),
    ("cache.memory_mb (RAM tier)", "kv-offloading-size, kv-offloading-backend", "GiB of CPU memory for KV, backend native"),
    ("the memory estimate", "gpu-memory-utilization", "weights + KV at max-num-seqs x max-model-len + activations + reserve, over the GPU's memory, rounded up to 0.05 (CUDA)"),
    ("the memory estimate (CPU)", "VLLM_CPU_KVCACHE_SPACE (environment)", "GiB for the KV cache of max-num-seqs x max-model-len"),
    ("GPUs the model needs", "tensor-parallel-size", "cuda devices in load.max_memory, or what the estimate needs; with --nodes: GPUs per node"),
    ("--nodes", "pipeline-parallel-size, distributed-executor-backend: ray", "one pipeline stage per node"),
    ("server.host, server.port", "host, port", "port 0 becomes 8000"),
    ("server.log_level", "uvicorn-log-level", "the same level"),
    ("server.api_key", "VLLM_API_KEY (environment)", "never in the file"),
]

GIB = 2**30
DEFAULT_TOKEN_BUDGET = {"cpu": 512, "gpu": 4096}


def render(source: ExportSource, nodes: int = 1, gpus_per_node: Optional[int] = None, **_options: Any) -> Rendered:
    args, env, notes = vllm_args(source, nodes=nodes, gpus_per_node=gpus_per_node)
    command = command_line(args, env)
    lines = header_lines(source, "vLLM configuration: vllm serve --config FILE", notes)
    lines += ["", "the API key is read from the environment, never from this file:",
              "  export VLLM_API_KEY=<the key clients send as 'Authorization: Bearer'>"]
    lines += [f"  export {k}={v}" for k, v in env.items() if k != "VLLM_API_KEY"]
    if nodes > 1:
        lines += ["", f"{nodes} nodes with Ray: on the head node 'ray start --head --port 6379', on each other node",
                  "'ray start --address HEAD:6379', then the command below on the head node (the model path must exist", "on every node)"]
    lines += ["", "the same as one command line:", f"  {command}"]
    body = yaml.safe_dump(yaml_keys(args), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return Rendered(files={"vllm.yaml": commented(lines) + "\n" + body}, notes=notes, command=command)


def yaml_keys(args: dict[str, Any]) -> dict[str, Any]:
    """The YAML's keys: a false switch as ``no-KEY: true``. vLLM turns ``KEY: false`` into
    ``--no-KEY`` only for options of its top-level parser, so ``enable-prefix-caching: false`` under
    ``vllm serve`` would be dropped without a word (found by the parser check against vLLM 0.32)."""
    return {(f"no-{k}" if v is False else k): (True if v is False else v) for k, v in args.items()}


def command_line(args: dict[str, Any], env: dict[str, str]) -> str:
    """``vllm serve MODEL --flag value …``; booleans as vLLM spells them (``--no-…`` for false)."""
    parts = ["vllm", "serve", shlex.quote(str(args["model"]))]
    for key, value in args.items():
        if key == "model":
            continue
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        else:
            parts += [f"--{key}", shlex.quote(str(value))]
    prefix = [f"{k}={shlex.quote(v)}" for k, v in env.items() if k != "VLLM_API_KEY"]
    return " ".join(prefix + parts)


def vllm_args(source: ExportSource, nodes: int = 1,
              gpus_per_node: Optional[int] = None) -> tuple[dict[str, Any], dict[str, str], list[Note]]:
    """(YAML keys in dash spelling, environment, notes on what did not map).

    Raises:
        ExportError: no model path, or a node layout that makes no sense.
    """
    config, notes = source.config, []
    if not config.model.path:
        raise ExportError("vLLM needs a model: the source has no model.path (load a model, or export from a "
                          "config that names one)")
    if nodes < 1 or (gpus_per_node is not None and gpus_per_node < 1):
        raise ExportError(f"--nodes and --gpus-per-node must be at least 1 (got {nodes}, {gpus_per_node})")
    gpu = source.device.startswith("cuda") or (nodes > 1 or gpus_per_node is not None)
    args: dict[str, Any] = {"model": config.model.path}
    if config.model.served_model_name:
        args["served-model-name"] = config.model.served_model_name
    args["dtype"] = config.model.dtype
    context = source.context_length
    if context:
        args["max-model-len"] = int(context)
    else:
        notes.append(Note("max-model-len", "the context length is unknown here (no max_context, model not on this "
                                           "machine): vLLM takes the model's own"))
    if config.model.trust_remote_code:
        args["trust-remote-code"] = True
    notes += _quantization(source, args, gpu)
    notes += _batching(source, args, gpu)
    notes += _cache(source, args)
    env: dict[str, str] = {}
    notes += _memory(source, args, env, gpu, nodes, gpus_per_node)
    server = config.server
    args["host"] = server.host
    args["port"] = server.port or 8000
    if not server.port:
        notes.append(Note("server.port", "0 (a free port) has no vLLM counterpart: 8000"))
    args["uvicorn-log-level"] = server.log_level
    notes += _unmapped(source)
    return args, env, notes


# The quant_method names of checkpoints vLLM loads as saved (its --quantization choices).
VLLM_SAVED_METHODS = {"gptq", "awq", "fp8", "compressed-tensors", "bitsandbytes", "torchao", "gguf", "mxfp4"}


def _quantization(source: ExportSource, args: dict[str, Any], gpu: bool) -> list[Note]:
    """vLLM's ``quantization`` where it has the method; otherwise what differs, said."""
    requested = source.config.model.quantization
    saved = _saved_quantization(source)
    if saved is not None:
        if saved.method in VLLM_SAVED_METHODS:
            args["quantization"] = saved.method
            return []
        return [Note("quantization", f"the checkpoint is saved as {saved.label}, which vLLM does not load")]
    if requested == "none":
        return []
    if requested == "int4" and gpu:
        args["quantization"] = "bitsandbytes"
        return [Note("model.quantization = int4", "vLLM quantizes on load with bitsandbytes (4-bit nf4, blocks of "
                                                  "64), not torchao's int4 in groups of 32: close in size, not the "
                                                  "same numbers")]
    where = "vLLM's CPU backend quantizes nothing on load" if not gpu else         "vLLM has no int8 weight-only quantization on load (its fp8 is W8A8 and needs an Ada or Hopper GPU)"
    return [Note(f"model.quantization = {requested}", f"{where}: the weights load in {source.config.model.dtype}; "
                                                      f"to keep them small, save a quantized checkpoint "
                                                      f"(GPTQ, AWQ, compressed-tensors) and export that")]


def _saved_quantization(source: ExportSource):
    path = source.config.model.path
    if not path or not Path(path).exists():
        return None
    from engine.catalog import inspect_path

    entry = inspect_path(Path(path))
    if entry.format == "gguf":
        return None  # vLLM reads GGUF by the file itself
    return entry.pre_quantized


def _batching(source: ExportSource, args: dict[str, Any], gpu: bool) -> list[Note]:
    batching, notes = source.config.batching, []
    if batching.mode == "sequential":
        args["max-num-seqs"] = 1
        notes.append(Note("batching.mode = sequential", "vLLM always batches; max-num-seqs 1 is the nearest "
                                                        f"(max_batch_size {batching.max_batch_size} not used)"))
    else:
        args["max-num-seqs"] = batching.max_batch_size
    budget = batching.max_batch_tokens or DEFAULT_TOKEN_BUDGET["gpu" if gpu else "cpu"]
    args["max-num-batched-tokens"] = budget
    if batching.mode == "dynamic":
        notes.append(Note("batching.mode = dynamic", "vLLM schedules continuously (requests join at every step), "
                                                     "the nearest to dynamic; max_wait_ms "
                                                     f"({batching.max_wait_ms:g} ms) has no counterpart"))
        if batching.max_batch_tokens is None:
            notes.append(Note("max-num-batched-tokens", f"dynamic mode has no token budget: {budget}, continuous "
                                                        "mode's default on this device"))
    if batching.mode == "continuous":
        if batching.page_size is not None:
            args["block-size"] = batching.page_size
        if batching.num_blocks is not None:
            args["num-gpu-blocks-override"] = batching.num_blocks
    if batching.cpu_offload_gb:
        notes.append(Note("batching.cpu_offload_gb", "no counterpart: vLLM recomputes preempted requests"))
    return notes


def _cache(source: ExportSource, args: dict[str, Any]) -> list[Note]:
    config, notes = source.config, []
    cache = config.cache
    if config.batching.mode == "continuous":
        args["enable-prefix-caching"] = config.batching.block_sharing
    else:
        args["enable-prefix-caching"] = cache.type == "hierarchical"
    if cache.type == "hierarchical" and cache.memory_mb > 0:
        args["kv-offloading-size"] = round(cache.memory_mb / 1024, 3)
        args["kv-offloading-backend"] = "native"
    if cache.type == "hierarchical" and cache.disk_mb > 0:
        notes.append(Note("cache.disk_mb", f"a disk tier ({cache.disk_mb:g} MB) needs LMCache in vLLM "
                                           "(kv-offloading-backend lmcache, configured by LMCACHE_* variables): "
                                           "exported without a disk tier"))
    return notes


def _memory(source: ExportSource, args: dict[str, Any], env: dict[str, str], gpu: bool, nodes: int,
            gpus_per_node: Optional[int]) -> list[Note]:
    """gpu-memory-utilization and tensor/pipeline parallel sizes from the estimate (CPU: the KV space)."""
    notes: list[Note] = []
    needed = _estimate(source, args.get("max-num-seqs", 1), args.get("max-model-len"), gpu)
    if needed is None:
        notes.append(Note("gpu-memory-utilization", "the model is not on this machine, so there is no memory "
                                                    "estimate: vLLM's default applies"))
    if not gpu:
        if needed is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(needed["kv"] / GIB)))
        return notes
    per_gpu = _gpu_memory(source)
    tp = gpus_per_node or _devices_in_max_memory(source) or _gpus_needed(needed, per_gpu)
    args["tensor-parallel-size"] = tp
    if nodes > 1:
        args["pipeline-parallel-size"] = nodes
        args["distributed-executor-backend"] = "ray"
    if needed is not None and per_gpu:
        share = needed["total"] / (tp * nodes) / per_gpu
        args["gpu-memory-utilization"] = min(0.95, max(0.3, math.ceil(share * 20) / 20))
        if share > 0.95:
            notes.append(Note("gpu-memory-utilization", f"the estimate needs {share:.0%} of each GPU's memory: "
                                                        "more GPUs (--gpus-per-node, --nodes) or a shorter context"))
    elif needed is not None:
        notes.append(Note("gpu-memory-utilization", "the GPU's memory is unknown here (no NVML reading, none "
                                                    "recorded): vLLM's default applies"))
    return notes


def _estimate(source: ExportSource, batch: int, context: Optional[int], gpu: bool) -> Optional[dict[str, int]]:
    path = source.config.model.path
    if not path or not Path(path).exists():
        return None
    from engine.catalog import inspect_path
    from engine.memory import estimate

    try:
        result = estimate(inspect_path(Path(path)), source.config.model.dtype, batch=batch, context=context,
                          device="cuda" if gpu else "cpu",
                          quantization="int4" if gpu and source.config.model.quantization == "int4" else "none")
    except (ValueError, OSError):
        return None
    return {"total": result.total_bytes, "kv": result.kv_cache_bytes}


def _gpu_memory(source: ExportSource) -> Optional[int]:
    """One GPU's total memory: as recorded with the source, else as NVML reads it here."""
    for gpu in (source.hardware or {}).get("gpus") or []:
        if gpu.get("memory_bytes"):
            return int(gpu["memory_bytes"])
    from engine.telemetry.gpu import gpu_count, gpu_memory

    device = source.device
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    if gpu_count() > index:
        return gpu_memory(index).total_bytes
    return None


def _devices_in_max_memory(source: ExportSource) -> Optional[int]:
    spread = [d for d in (source.config.load.max_memory or {}) if d.startswith("cuda")]
    return len(spread) if len(spread) > 1 else None


def _gpus_needed(needed: Optional[dict[str, int]], per_gpu: Optional[int]) -> int:
    if not needed or not per_gpu:
        return 1
    count = max(1, math.ceil(needed["total"] / (0.9 * per_gpu)))
    return 1 << (count - 1).bit_length()  # vLLM splits heads evenly: a power of two


def _unmapped(source: ExportSource) -> list[Note]:
    config = source.config
    notes = [Note("batching.max_queue", f"{config.batching.max_queue}: vLLM queues without a limit"),
             Note("batching.request_timeout_s", f"{config.batching.request_timeout_s:g} s: no per-request time "
                                                "limit in vLLM; set one in the client or a proxy")]
    if config.model.device not in ("auto", "cpu") and not config.model.device.startswith("cuda"):
        notes.append(Note("model.device", f"{config.model.device}: vLLM picks its device by the build installed"))
    if config.load.max_memory:
        notes.append(Note("load.max_memory", "per-device limits: vLLM splits the model by tensor parallelism instead"))
    if config.server.metrics_public is False:
        notes.append(Note("server.metrics_public = false", "vLLM's /metrics needs no key (VLLM_API_KEY guards /v1)"))
    if config.server.rate_limit or any(k.rate_limit for k in config.server.keys):
        notes.append(Note("server.rate_limit", "no rate limits in vLLM: put a proxy in front"))
    if config.server.keys:
        notes.append(Note("server.keys", "vLLM has one API key and no roles: VLLM_API_KEY"))
    if config.server.grpc_port is not None:
        notes.append(Note("server.grpc_port", "vLLM serves no gRPC"))
    notes.append(Note("server.circuit", "no circuit breaker in vLLM"))
    return notes
