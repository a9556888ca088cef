"""What the Monitor plots: each plot's title, the buffer series drawn as its lines, and how its
y axis is topped. Plain data, read by the plot grid, the panel and the CSV export alike."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

GIB = 2**30
CORES = os.cpu_count() or 1
COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8"]


@dataclass(frozen=True)
class Line:
    series: str               # buffer series; {g} is the selected GPU's index
    legend: str
    scale: float = 1.0
    on: Optional[str] = None  # "cuda"/"cpu": drawn only while the model sits on that kind of device


@dataclass(frozen=True)
class PlotSpec:
    lines: tuple[Line, ...]
    top: Union[float, str, None] = None  # fixed top, a series holding it (VRAM total), or None: a round ceiling
    sparse: bool = False  # a value only for intervals with requests: lone samples drawn as dots
    detail: bool = False  # shown on demand ("Batching and cache")


def model_share(on: str) -> tuple[Line, ...]:
    """The loaded model's weights/KV split, on the plot of the memory it lives in."""
    return (Line("engine_weights_bytes", "weights", 1 / GIB, on), Line("engine_kv_cache_bytes", "KV", 1 / GIB, on),
            Line("engine_prefix_cache_ram_bytes", "prefix KV", 1 / GIB, on))


PLOTS = {
    "GPU utilization (%)": PlotSpec((Line("gpu{g}_gpu_util_pct", "GPU"), Line("gpu{g}_mem_util_pct", "memory bus")),
                                    top=100),
    # The top is the device's total: "used vs total" at a glance, and an axis that never moves.
    "VRAM (GiB)": PlotSpec((Line("gpu{g}_mem_used_bytes", "used", 1 / GIB),
                            Line("gpu{g}_engine_mem_bytes", "engine", 1 / GIB), *model_share("cuda")),
                           top="gpu{g}_mem_total_bytes"),
    "Temperature (°C) and power (W)": PlotSpec((Line("gpu{g}_temperature_c", "°C"), Line("gpu{g}_power_w", "W"))),
    "Tokens/s": PlotSpec((Line("engine_generation_tokens_per_s", "generated"),
                          Line("engine_prompt_tokens_per_s", "prompt"))),
    "Requests": PlotSpec((Line("engine_requests_running", "running"), Line("engine_requests_waiting", "waiting"))),
    "Time to first token (ms)": PlotSpec((Line("engine_ttft_p50_s", "p50", 1000), Line("engine_ttft_p99_s", "p99", 1000)),
                                         sparse=True),
    "Batch size (mean per step)": PlotSpec((Line("engine_batch_size_mean", "requests"),), sparse=True, detail=True),
    # prefix hits: ours; KV in use: vLLM's kv_cache_usage_perc (ours has no fixed KV pool)
    "Cache (%)": PlotSpec((Line("engine_prefix_cache_hit_rate", "prefix hits", 100),
                           Line("engine_kv_cache_usage", "KV in use", 100)), top=100, sparse=True, detail=True),
    "RAM (GiB)": PlotSpec((Line("ram_used_bytes", "host", 1 / GIB), Line("worker_rss_bytes", "engine", 1 / GIB),
                           *model_share("cpu"))),
    # psutil gives the host as % of all cores and a process as % of one: the engine is scaled to
    # the host's measure so both lines share one axis.
    "CPU (% of all cores)": PlotSpec((Line("cpu_pct", "host"), Line("worker_cpu_pct", "engine", 1 / CORES)), top=100),
}
# Exported with the plotted series: the totals the plots use as their scale.
CSV_EXTRA = ("gpu{g}_mem_total_bytes", "ram_total_bytes")
# Plots of NVML's figures: without a GPU they are not shown (the line under the toolbar says why).
GPU_PLOTS = tuple(title for title, spec in PLOTS.items() if spec.lines[0].series.startswith("gpu{g}"))
