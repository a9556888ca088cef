"""The same bench workload against several OpenAI-compatible endpoints (the built-in engine, vLLM,
any other), side by side: one table, one chart (output tokens/s and p99 TTFT per concurrency), one
JSON record. Torch-free: ``deepseek-engine bench --url A --url B`` and the app's Compare view use it.

Levels are interleaved (concurrency 1 on A, then on B, then 8 on A …), so a machine that slows down
during the run (others' load, heat) weighs on every endpoint alike.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

from engine import bench


@dataclass
class Endpoint:
    url: str
    api_key: Optional[str] = None
    model: Optional[str] = None       # default: the first of its /v1/models
    label: Optional[str] = None       # default: host:port

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        parts = urlsplit(self.url)
        return parts.netloc or self.url


@dataclass
class Workload:
    concurrency: list[int]
    requests: int = 16
    prompt_tokens: int = 128
    output_tokens: int = 64
    shared_prefix_tokens: int = 0


@dataclass
class Comparison:
    workload: Workload
    endpoints: list[dict] = field(default_factory=list)  # name, url, model, levels (LevelReport dicts)
    started: float = field(default_factory=time.time)

    def record(self) -> dict:
        return {"kind": "bench-comparison", "started": self.started, "workload": asdict(self.workload),
                "endpoints": self.endpoints}


def resolve_models(endpoints: list[Endpoint]) -> None:
    """Fill each endpoint's model from its /v1/models.

    Raises:
        RuntimeError: an endpoint cannot be reached or serves no model (which one, and why).
    """
    for endpoint in endpoints:
        if endpoint.model:
            continue
        try:
            endpoint.model = bench.first_model(endpoint.url, endpoint.api_key)
        except Exception as exc:
            raise RuntimeError(f"cannot reach a model at {endpoint.url}: {exc}") from exc


def compare(endpoints: list[Endpoint], workload: Workload,
            on_level: Optional[Callable[[str, bench.LevelReport], None]] = None,
            progress_for: Optional[Callable[[str, int], Optional[Callable[[int, int], None]]]] = None) -> Comparison:
    """Run ``workload`` on every endpoint, level by level, interleaved. Each endpoint's prompts are
    the same ones (``make_prompt`` from index 0 per level): a prefix cache helps all alike."""
    resolve_models(endpoints)
    result = Comparison(workload, [{"name": e.name, "url": e.url, "model": e.model, "levels": []} for e in endpoints])
    for level in workload.concurrency:
        for endpoint, row in zip(endpoints, result.endpoints):
            report = asyncio.run(bench.run_level(
                endpoint.url, endpoint.api_key, endpoint.model, level, workload.requests, workload.prompt_tokens,
                workload.output_tokens, workload.shared_prefix_tokens,
                progress=progress_for(endpoint.name, level) if progress_for else None,
                first_index=level * 1000))
            row["levels"].append(asdict(report))
            if on_level:
                on_level(endpoint.name, report)
    return result


def series(record: dict, what: str) -> dict[str, list[tuple[int, Optional[float]]]]:
    """name -> [(concurrency, value)] for ``what``: "tokens_per_s" or "ttft_p99_s"."""
    def value(level: dict) -> Optional[float]:
        return level["output_tokens_per_s"] if what == "tokens_per_s" else level["ttft_s"]["p99"]
    return {e["name"]: [(lv["concurrency"], value(lv)) for lv in e["levels"]] for e in record["endpoints"]}


def format_comparison(record: dict) -> str:
    """One table: a row per concurrency and endpoint; ratios are to the first endpoint at that level."""
    def ms(v: Optional[float]) -> str:
        return "     N/A" if v is None else f"{v * 1000:8.0f}"

    width = max(8, *(len(e["name"]) for e in record["endpoints"]))
    lines = [f"{'endpoint':<{width}}  conc  ok/req    tok/s  vs first  TTFT p50 ms  TTFT p99 ms  errors"]
    first = record["endpoints"][0]
    for index, level in enumerate(first["levels"]):
        base = level["output_tokens_per_s"]
        for endpoint in record["endpoints"]:
            lv = endpoint["levels"][index]
            ratio = f"{lv['output_tokens_per_s'] / base:7.2f}x" if base else "      - "
            errors = ", ".join(f"{k}:{v}" for k, v in sorted(lv["errors"].items()))
            lines.append(f"{endpoint['name']:<{width}}  {lv['concurrency']:4d} {lv['ok']:3d}/{lv['requests']:<3d} "
                         f"{lv['output_tokens_per_s']:8.1f}  {ratio}  {ms(lv['ttft_s']['p50'])}     "
                         f"{ms(lv['ttft_s']['p99'])}     {errors}")
    return "\n".join(lines)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def comparison_svg(record: dict, width: int = 900, height: int = 360) -> str:
    """The chart as SVG (no plotting library): tokens/s (left) and p99 TTFT (right) per
    concurrency, one line per endpoint, concurrency on a log2 axis."""
    panels = [("output tokens/s", series(record, "tokens_per_s"), 1.0),
              ("p99 TTFT (ms)", series(record, "ttft_p99_s"), 1000.0)]
    levels = sorted({c for e in record["endpoints"] for c in (lv["concurrency"] for lv in e["levels"])})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>']
    panel_w, top, bottom, left = width / 2, 30, height - 60, 60
    import math

    def x_of(c: int, x0: float) -> float:
        span = math.log2(max(levels)) - math.log2(min(levels)) or 1
        return x0 + left + (math.log2(c) - math.log2(min(levels))) / span * (panel_w - left - 20)

    for p, (title, data, scale) in enumerate(panels):
        x0 = p * panel_w
        values = [v * scale for points in data.values() for _, v in points if v is not None]
        top_value = max(values) * 1.1 if values else 1.0
        out.append(f'<text x="{x0 + panel_w / 2}" y="18" text-anchor="middle">{title}</text>')
        out.append(f'<line x1="{x0 + left}" y1="{bottom}" x2="{x0 + panel_w - 20}" y2="{bottom}" stroke="black"/>')
        out.append(f'<line x1="{x0 + left}" y1="{top}" x2="{x0 + left}" y2="{bottom}" stroke="black"/>')
        out.append(f'<text x="{x0 + left - 4}" y="{top + 4}" text-anchor="end">{top_value:.0f}</text>')
        for c in levels:
            out.append(f'<text x="{x_of(c, x0):.1f}" y="{bottom + 16}" text-anchor="middle">{c}</text>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{bottom + 32}" text-anchor="middle">concurrency</text>')
        for i, (name, points) in enumerate(data.items()):
            xy = [(x_of(c, x0), bottom - (v * scale) / top_value * (bottom - top)) for c, v in points if v is not None]
            colour = COLOURS[i % len(COLOURS)]
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in xy]
    for i, endpoint in enumerate(record["endpoints"]):
        out.append(f'<text x="{left + i * 220}" y="{height - 8}" fill="{COLOURS[i % len(COLOURS)]}">'
                   f'&#9632; {_escape(endpoint["name"])} ({_escape(str(endpoint["model"]))})</text>')
    out.append("</svg>")
    return "\n".join(out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
