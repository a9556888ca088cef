"""The experiment of a sweep (torch-free): the grid of run-time settings, the workload, the
objective, and one measured point."""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

RUNTIME_SECTIONS = ("batching", "cache")
ASK_ABOVE_POINTS = 200        # a bigger sweep asks before it starts (CLI: --yes)
LATENCIES = ("ttft", "e2e")


class GridError(ValueError):
    """The grid file is not TOML, names a field that is not a run-time setting, or lists no value."""


# ---------------------------------------------------------------------------- grid

def runtime_fields() -> dict[str, str]:
    """Every dotted run-time field (``batching.max_batch_size`` …) and its description."""
    from engine.config import BatchingConfig, CacheConfig

    out = {}
    for section, model in (("batching", BatchingConfig), ("cache", CacheConfig)):
        for name, info in model.model_fields.items():
            out[f"{section}.{name}"] = info.description or ""
    return out


def parse_grid(text: str, source: str = "grid") -> dict[str, list]:
    """A TOML grid: one dotted key per line with a list of values. Values are not checked here:
    the engine judges them, and a refused one becomes a refused point.

    Raises:
        GridError: not TOML, an unknown or non-run-time key, a value that is not a non-empty list.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{source} is not valid TOML: {exc}") from None
    grid = {}
    known = runtime_fields()
    for key, values in _flatten(data).items():
        if key not in known:
            raise GridError(f"{source}: {key} is not a run-time setting (one of: {', '.join(known)})")
        if not isinstance(values, list) or not values:
            raise GridError(f"{source}: {key} must be a non-empty list of values, e.g. [1, 4, 8]")
        grid[key] = values
    return grid


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"batching": {"x": [..]}}`` (a [batching] table) and ``{"batching.x": [..]}`` alike."""
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def load_grid(path: str | Path) -> dict[str, list]:
    path = Path(path)
    try:
        return parse_grid(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise GridError(f"grid file not found: {path}") from None


def expand_grid(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest; none for an empty grid (a workload-only
    sweep: itertools.product of nothing is one empty combination, which would PUT {} to a server
    that may have no /admin API and measure the reference twice)."""
    if not grid:
        return []
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def count_points(grid: dict[str, list], levels: int) -> int:
    """Points a sweep measures: the reference and each combination, at every concurrency level."""
    return (1 + (math.prod(len(v) for v in grid.values()) if grid else 0)) * levels


def sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Dotted keys as the ``PUT /admin/config`` body: ``{"batching": {"max_batch_size": 8}}``."""
    body: dict[str, dict[str, Any]] = {}
    for dotted, value in config.items():
        section, _, key = dotted.partition(".")
        body.setdefault(section, {})[key] = value
    return body


def to_toml(config: dict[str, Any]) -> str:
    """The ``[batching]`` / ``[cache]`` tables of a point's settings."""
    import tomli_w

    # TOML has no null: an unset value (the engine's default) is left out.
    return tomli_w.dumps(sections({k: v for k, v in config.items() if v is not None})).strip()


# ---------------------------------------------------------------------------- experiment

@dataclass
class Workload:
    prompt_tokens: int = 128
    output_tokens: int = 64
    shared_prefix_pct: float = 0.0
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 8])
    requests: int = 16                 # per point, unless ``seconds`` bounds it
    seconds: Optional[float] = None

    @property
    def shared_prefix_tokens(self) -> int:
        return int(round(self.prompt_tokens * self.shared_prefix_pct / 100))

    def check(self) -> None:
        """Raises: ValueError naming the field."""
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency levels must be positive integers, got {self.concurrency}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError("prompt and output tokens must be at least 1")
        if not 0 <= self.shared_prefix_pct <= 100:
            raise ValueError(f"shared prefix must be 0-100%, got {self.shared_prefix_pct}")
        if self.seconds is None and self.requests < 1:
            raise ValueError(f"requests per point must be at least 1, got {self.requests}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"seconds per point must be positive, got {self.seconds}")

    def describe(self) -> str:
        per = f"{self.seconds:g} s" if self.seconds is not None else f"{self.requests} requests"
        shared = f", {self.shared_prefix_pct:g}% shared prefix" if self.shared_prefix_pct else ""
        return (f"{self.prompt_tokens} prompt + {self.output_tokens} output tokens{shared}, concurrency "
                f"{', '.join(map(str, self.concurrency))}, {per} per point")


@dataclass
class Objective:
    """``throughput``: highest output tokens/s among the points within the p99 limits.
    ``latency``: lowest p99 ``latency`` (ttft or e2e) among the points above ``min_tokens_per_s``."""

    goal: str = "throughput"
    max_ttft_p99_s: Optional[float] = None
    max_e2e_p99_s: Optional[float] = None
    min_tokens_per_s: Optional[float] = None
    latency: str = "e2e"

    def check(self) -> None:
        if self.goal not in ("throughput", "latency"):
            raise ValueError(f"objective must be throughput or latency, got {self.goal!r}")
        if self.latency not in LATENCIES:
            raise ValueError(f"latency must be ttft or e2e, got {self.latency!r}")

    def limits(self) -> str:
        parts = []
        if self.max_ttft_p99_s is not None:
            parts.append(f"p99 TTFT ≤ {self.max_ttft_p99_s * 1000:g} ms")
        if self.max_e2e_p99_s is not None:
            parts.append(f"p99 E2E ≤ {self.max_e2e_p99_s * 1000:g} ms")
        if self.min_tokens_per_s is not None:
            parts.append(f"≥ {self.min_tokens_per_s:g} tok/s")
        return ", ".join(parts) or "no limits"

    def describe(self) -> str:
        aim = "highest output tokens/s" if self.goal == "throughput" else f"lowest p99 {self.latency.upper()}"
        return f"{aim} ({self.limits()})"


@dataclass
class Point:
    """One measured (or refused) configuration at one concurrency level; the JSON names are the
    record format's (``deepseek-engine export --from sweep.json#N`` reads them)."""

    index: int
    config: dict[str, Any]
    concurrency: int
    reference: bool = False
    output_tokens_per_s: Optional[float] = None
    request_throughput: Optional[float] = None
    requests: int = 0
    ok: int = 0
    duration_s: Optional[float] = None
    prompt_tokens_mean: Optional[float] = None
    ttft_s: dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(("p50", "p90", "p99")))
    itl_s: dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(("p50", "p90", "p99")))
    e2e_s: dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(("p50", "p90", "p99")))
    errors: dict[str, int] = field(default_factory=dict)
    pareto: bool = False
    meets_slo: bool = False
    refused: Optional[str] = None
    overhead_s: Optional[float] = None  # config change + warm-up before this point's step
    ratio: Optional[float] = None       # output tokens/s over the reference's at this concurrency

    @property
    def measured(self) -> bool:
        return self.refused is None and self.ok > 0 and self.output_tokens_per_s is not None

    def p99(self, latency: str = "e2e") -> Optional[float]:
        return getattr(self, f"{latency}_s").get("p99")

    def label(self) -> str:
        settings = ", ".join(f"{k.partition('.')[2]}={v}" for k, v in self.config.items()) or "in force"
        return f"{'reference: ' if self.reference else ''}{settings} @ c{self.concurrency}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Point":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


