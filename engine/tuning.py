"""Sweeps over run-time settings (torch-free): the one module behind ``deepseek-engine tune`` and
the Tuning panel.

An experiment is a workload (prompt and output tokens, a shared prefix, concurrency levels,
requests or seconds per point) x a grid (run-time ``[batching]``/``[cache]`` fields, each with a
list of values) x an objective (highest output tokens/s under p99 latency limits, or lowest p99
latency above a throughput floor). ``Sweep.run`` measures the configuration in force first (the
reference), then applies each grid combination with ``PUT /admin/config``, warms it up and
measures every concurrency level with ``engine.bench``; it restores the configuration it found
at the end, on cancel and on a fault. A value the engine refuses becomes a refused point and the
sweep goes on; an engine that stops answering ends the sweep with the points done kept and the
reason in the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import platform
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import httpx

from engine import bench

RECORD_FORMAT = "deepseek-tune/1"
RUNTIME_SECTIONS = ("batching", "cache")
ASK_ABOVE_POINTS = 200        # a bigger sweep asks before it starts (CLI: --yes)
WARMUP_TOKENS = 2
INDEX_STRIDE = 100_000        # prompt indexes per step: no point reuses another's prompts
SECONDS_CAP = 100_000         # requests cap of a level bounded by time
LATENCIES = ("ttft", "e2e")


class GridError(ValueError):
    """The grid file is not TOML, names a field that is not a run-time setting, or lists no value."""


class SweepError(RuntimeError):
    """The sweep cannot start: no model served, or a grid against a server without our /admin API."""


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
    """Every combination, the last key varying fastest."""
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


# ---------------------------------------------------------------------------- judging points

def pareto_flags(points: list[Point], latency: str = "e2e") -> list[bool]:
    """For each point: no other measured point has both higher output tokens/s and lower p99."""
    data = [(p.output_tokens_per_s, p.p99(latency)) if p.measured and p.p99(latency) is not None else None
            for p in points]
    flags = []
    for mine in data:
        if mine is None:
            flags.append(False)
            continue
        flags.append(not any(other is not None and other[0] > mine[0] and other[1] < mine[1] for other in data))
    return flags


def front(points: list[Point], latency: str = "e2e") -> list[Point]:
    """The Pareto points in order of p99 latency (the line drawn on the plot)."""
    chosen = [p for p, on in zip(points, pareto_flags(points, latency)) if on]
    return sorted(chosen, key=lambda p: (p.p99(latency), -p.output_tokens_per_s))


def meets_slo(point: Point, objective: Objective) -> bool:
    """Every request answered and every limit of the objective met."""
    if not point.measured or point.errors or point.ok < point.requests:
        return False
    checks = ((objective.max_ttft_p99_s, point.p99("ttft")), (objective.max_e2e_p99_s, point.p99("e2e")))
    for limit, value in checks:
        if limit is not None and (value is None or value > limit):
            return False
    floor = objective.min_tokens_per_s
    return floor is None or point.output_tokens_per_s >= floor


def score(point: Point, objective: Objective) -> float:
    """Higher is better: tokens/s, or the negated p99 latency."""
    if objective.goal == "throughput":
        return point.output_tokens_per_s
    return -(point.p99(objective.latency) or math.inf)


def reference_for(points: list[Point], concurrency: int) -> Optional[Point]:
    return next((p for p in points if p.reference and p.concurrency == concurrency and p.measured), None)


def margin(point: Point, reference: Optional[Point], objective: Objective) -> Optional[float]:
    """How much better ``point`` is than the reference on the objective (>1: better): the
    throughput ratio, or the reference's p99 over the point's."""
    if reference is None or not reference.measured or not point.measured:
        return None
    if objective.goal == "throughput":
        return point.output_tokens_per_s / reference.output_tokens_per_s if reference.output_tokens_per_s else None
    mine, theirs = point.p99(objective.latency), reference.p99(objective.latency)
    return theirs / mine if mine and theirs is not None else None


def judge(points: list[Point], objective: Objective) -> tuple[Optional[Point], str, Optional[float]]:
    """Mark Pareto, SLO and ratios on every point; return the recommended point, one sentence on
    why, and its margin over the reference at its concurrency."""
    for point, on in zip(points, pareto_flags(points, "e2e")):
        point.pareto = on
        point.meets_slo = meets_slo(point, objective)
        ref = reference_for(points, point.concurrency)
        point.ratio = (point.output_tokens_per_s / ref.output_tokens_per_s
                       if point.measured and ref is not None and ref.output_tokens_per_s else None)
    candidates = [p for p in points if p.meets_slo]
    if not candidates:
        measured = [p for p in points if p.measured]
        why = ("no point was measured" if not measured else f"no point meets the objective ({objective.limits()}, "
               "every request answered); loosen a limit or add smaller settings to the grid")
        return None, why, None
    best = max(candidates, key=lambda p: (score(p, objective), -p.index))
    ref = reference_for(points, best.concurrency)
    gain = margin(best, ref, objective)
    return best, _why(best, ref, gain, objective, len(candidates)), gain


def _why(best: Point, ref: Optional[Point], gain: Optional[float], objective: Objective, n: int) -> str:
    lat = objective.latency if objective.goal == "latency" else ("ttft" if objective.max_ttft_p99_s is not None
                                                                 and objective.max_e2e_p99_s is None else "e2e")
    p99 = best.p99(lat)
    figures = f"{best.output_tokens_per_s:.1f} tok/s, p99 {lat.upper()} {p99 * 1000:.0f} ms"
    if best.reference:
        head = f"The settings in force are best at concurrency {best.concurrency} ({figures})"
    else:
        versus = f", {gain:.2f}x the reference's {'tokens/s' if objective.goal == 'throughput' else 'p99'}" if gain else ""
        head = f"{best.label()}: {figures}{versus}"
    aim = "the highest throughput" if objective.goal == "throughput" else f"the lowest p99 {lat.upper()}"
    within = f"within {objective.limits()}" if objective.limits() != "no limits" else "measured (no limits set)"
    return f"{head} — {aim} of the {n} point{'s' if n != 1 else ''} {within}."


# ---------------------------------------------------------------------------- the record

@dataclass
class SweepRecord:
    url: str
    model: str
    workload: dict
    grid: dict
    objective: dict
    format: str = RECORD_FORMAT
    id: str = ""
    started: str = ""
    finished: Optional[str] = None
    model_fingerprint: Optional[str] = None
    hardware: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    admin: bool = True                 # the server takes PUT /admin/config
    config_found: Optional[dict] = None
    points: list[Point] = field(default_factory=list)
    reference: Optional[Point] = None
    recommended: Optional[Point] = None
    recommendation: str = ""
    margin: Optional[float] = None
    status: str = "running"            # running | finished | cancelled | stopped
    stopped_reason: Optional[str] = None
    restored: Optional[bool] = None    # None: nothing was changed
    restore_error: Optional[str] = None

    def objective_obj(self) -> Objective:
        return Objective(**self.objective)

    def finish(self, status: Optional[str] = None) -> None:
        """Judge the points and fill reference and recommended."""
        objective = self.objective_obj()
        self.recommended, self.recommendation, self.margin = judge(self.points, objective)
        levels = [p.concurrency for p in self.points if p.reference and p.measured]
        conc = self.recommended.concurrency if self.recommended else (max(levels) if levels else None)
        self.reference = reference_for(self.points, conc) if conc is not None else None
        if status:
            self.status = status

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("reference", "recommended"):
            data[name] = data[name].to_dict() if data[name] is not None else None
        data["points"] = [p.to_dict() for p in self.points]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SweepRecord":
        names = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in names})
        record.points = [Point.from_dict(p) for p in data.get("points", [])]
        by_index = {p.index: p for p in record.points}
        for name in ("reference", "recommended"):
            value = data.get(name)
            setattr(record, name, by_index.get(value["index"], Point.from_dict(value)) if value else None)
        return record

    def write(self, path: str | Path) -> Path:
        """Atomically: a crash mid-write never leaves half a record."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "SweepRecord":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def title(self) -> str:
        n = len([p for p in self.points if not p.reference])
        when = self.started[:16].replace("T", " ")
        return f"{when} · {self.model} · {n} grid points · {self.status}"


def sweeps_dir() -> Path:
    from engine.paths import data_dir

    return data_dir() / "sweeps"


def list_records(folder: Optional[Path] = None) -> list[Path]:
    """Kept sweeps, newest first."""
    folder = folder or sweeps_dir()
    return sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []


def keep(record: SweepRecord, folder: Optional[Path] = None) -> Path:
    return record.write((folder or sweeps_dir()) / f"{record.id}.json")


# ---------------------------------------------------------------------------- what was measured on what

def hardware_summary() -> dict:
    import psutil

    from engine.telemetry.gpu import GpuSource

    gpus = []
    source = GpuSource()
    if source.available:
        gpus = [{"name": g.name, "memory_bytes": g.mem_total_bytes} for g in source.snapshot()]
    return {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "cpu": _cpu_name(), "cpu_cores": psutil.cpu_count(logical=False), "cpu_threads": psutil.cpu_count(),
            "ram_bytes": psutil.virtual_memory().total, "gpus": gpus, "gpu_driver": source.driver}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("deepseek-desktop", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def model_fingerprint(model: str, status: Optional[dict]) -> str:
    """Changes when the weights, the config, the dtype or the device change: the served folder's
    config.json and its weight files' names, sizes and times (read where the folder is visible
    from here), with the model id, dtype and device the engine reports."""
    status = status or {}
    h = hashlib.sha256(f"{model}|{status.get('dtype')}|{status.get('device')}".encode())
    path = Path(status["path"]) if status.get("path") else None
    if path is not None and path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors")):
            stat = f.stat()
            h.update(f"{f.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
    else:
        h.update(str(status.get("memory_bytes")).encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------- running a sweep

class _Stop(Exception):
    """The engine stopped answering: the sweep ends, keeping what it measured."""


class Sweep:
    """One sweep against a running server. ``run`` blocks (run it on a worker thread in a GUI);
    ``on_event(dict)`` is called from that thread with ``plan``, ``progress`` and ``point`` events;
    ``cancel`` may be called from any thread.
    """

    def __init__(self, url: str, api_key: Optional[str], grid: dict[str, list], workload: Workload,
                 objective: Objective, model: Optional[str] = None,
                 on_event: Optional[Callable[[dict], None]] = None, timeout_s: float = 30.0):
        workload.check()
        objective.check()
        self.url, self.api_key = url.rstrip("/"), api_key
        self.grid, self.workload, self.objective, self.model = grid, workload, objective, model
        self.on_event = on_event or (lambda event: None)
        self.http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._cancel = threading.Event()
        self._changed = False
        self._next_index = 0
        self._point_times: list[float] = []
        self.record: Optional[SweepRecord] = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- what the server is
    def probe(self) -> tuple[str, Optional[dict], Optional[dict], Optional[str]]:
        """(model id, the runtime config in force or None, /admin/status or None, why no admin).

        Raises:
            SweepError: the server serves no model or cannot be reached.
        """
        try:
            model = self.model or bench.first_model(self.url, self.api_key)
        except Exception as exc:  # connection refused, 401, no model: say which
            raise SweepError(f"cannot reach a model at {self.url}: {exc}") from None
        try:
            response = self.http.get(self.url + "/admin/config")
        except httpx.HTTPError as exc:
            raise SweepError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code != 200:
            why = (f"the API key may not change settings there ({_message(response)})"
                   if response.status_code in (401, 403) else
                   "it has no /admin API (vLLM, transformers serve…): its settings cannot be changed from here")
            return model, None, None, why
        found = {s: response.json().get(s, {}) for s in RUNTIME_SECTIONS}
        try:
            status = self.http.get(self.url + "/admin/status").json()
        except (httpx.HTTPError, ValueError):
            status = None
        return model, found, status, None

    def run(self) -> SweepRecord:
        """Measure the reference and every grid combination; never raises once started: faults
        end up in the record (``status``, ``stopped_reason``, ``restore_error``).

        Raises:
            SweepError: before anything is measured (no model; a grid and no /admin API).
        """
        model, found, status, no_admin = self.probe()
        if no_admin and self.grid:
            raise SweepError(f"{self.url}: {no_admin}. Run a workload-only sweep (no grid) over the "
                             "concurrency levels instead.")
        self.record = record = self._new_record(model, found, status, no_admin is None)
        steps = [None] + expand_grid(self.grid)
        total = len(steps) * len(self.workload.concurrency)
        self.on_event({"type": "plan", "points": total, "steps": len(steps)})
        outcome = "stopped"  # unless the loop ends
        try:
            for combo in steps:
                if self.cancelled:
                    break
                self._step(record, combo, total)
            outcome = "cancelled" if self.cancelled else "finished"
        except _Stop as exc:
            record.stopped_reason = str(exc)
        finally:
            self._restore(record)
            record.finished = _now()
            record.finish(outcome)
            self.http.close()
        return record

    def _new_record(self, model: str, found: Optional[dict], status: Optional[dict], admin: bool) -> SweepRecord:
        started = datetime.now(timezone.utc)
        return SweepRecord(
            url=self.url, model=model, workload=asdict(self.workload), grid=self.grid,
            objective=asdict(self.objective), id=started.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex(),
            started=started.isoformat(timespec="seconds"), model_fingerprint=model_fingerprint(model, status),
            hardware={**hardware_summary(), "engine_device": (status or {}).get("device"),
                      "engine_dtype": (status or {}).get("dtype")},
            versions=versions(), admin=admin, config_found=found)

    def _reference_config(self, found: Optional[dict]) -> dict[str, Any]:
        """The grid's keys at the values in force (what the reference point measured)."""
        if not found:
            return {}
        return {k: found.get(k.partition(".")[0], {}).get(k.partition(".")[2]) for k in self.grid}

    def _step(self, record: SweepRecord, combo: Optional[dict], total: int) -> None:
        config = combo if combo is not None else self._reference_config(record.config_found)
        started = time.perf_counter()
        refused = self._apply(combo) if combo is not None else None
        overhead = None
        if refused is None:
            self._warm_up(record.model)
            overhead = time.perf_counter() - started
        for level in self.workload.concurrency:
            if self.cancelled:
                return
            point = Point(index=len(record.points), config=dict(config), concurrency=level,
                          reference=combo is None, refused=refused, overhead_s=overhead)
            if refused is None:
                self._measure(record, point, total)
                if self.cancelled:  # a level cut short is not a point
                    return
            record.points.append(point)
            record.finish()
            self.on_event({"type": "point", "point": point.to_dict(), "points": total})
            self._check_alive(point)

    def _apply(self, combo: dict) -> Optional[str]:
        """PUT the combination; the engine's refusal, word for word, or None."""
        try:
            response = self.http.put(self.url + "/admin/config", json=sections(combo))
        except httpx.HTTPError as exc:
            raise _Stop(f"the engine stopped answering while applying {combo}: {exc}") from None
        self._changed = True
        if response.status_code == 400:
            return _message(response)
        if response.status_code != 200:
            raise _Stop(f"PUT /admin/config answered {response.status_code}: {_message(response)}")
        return None

    def _warm_up(self, model: str) -> None:
        """One short request: the new scheduler starts (and a shared prefix is cached) before timing."""
        report = self._run_level(model, 1, 1, WARMUP_TOKENS, None)
        if report is not None and report.ok == 0 and _connection_lost(report):
            self._raise_if_dead("warming up")

    def _run_level(self, model: str, concurrency: int, requests: int, output_tokens: int,
                   seconds: Optional[float], progress=None):
        w = self.workload
        first, self._next_index = self._next_index, self._next_index + INDEX_STRIDE
        coro = bench.run_level(self.url, self.api_key, model, concurrency, requests, w.prompt_tokens, output_tokens,
                               w.shared_prefix_tokens, progress=progress, seconds=seconds, first_index=first)
        return asyncio.run(self._cancellable(coro))

    async def _cancellable(self, coro):
        """Run a level, stopping it (its requests disconnect, the engine frees their slots) on cancel."""
        task = asyncio.ensure_future(coro)
        while not task.done():
            await asyncio.wait({task}, timeout=0.1)
            if self.cancelled and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    return None
        return task.result()

    def _measure(self, record: SweepRecord, point: Point, total: int) -> None:
        w = self.workload
        started = time.perf_counter()
        requests = SECONDS_CAP if w.seconds is not None else w.requests

        def progress(done: int, _total: int) -> None:
            elapsed = time.perf_counter() - started
            share = min(1.0, elapsed / w.seconds) if w.seconds else done / w.requests
            self.on_event({"type": "progress", "point": point.index + 1, "points": total, "config": point.config,
                           "concurrency": point.concurrency, "done": done,
                           "total": None if w.seconds else w.requests, "elapsed_s": elapsed,
                           "tokens_per_s": done * w.output_tokens / elapsed if elapsed else None,
                           "eta_s": self._eta(point.index, total, share)})

        self.on_event({"type": "progress", "point": point.index + 1, "points": total, "config": point.config,
                       "concurrency": point.concurrency, "done": 0, "total": None if w.seconds else w.requests,
                       "elapsed_s": 0.0, "tokens_per_s": None, "eta_s": self._eta(point.index, total, 0.0)})
        report = self._run_level(record.model, point.concurrency, requests, w.output_tokens, w.seconds, progress)
        if report is None:
            return
        self._point_times.append(time.perf_counter() - started + (point.overhead_s or 0) / len(w.concurrency))
        for name in ("output_tokens_per_s", "request_throughput", "requests", "ok", "duration_s",
                     "prompt_tokens_mean", "ttft_s", "itl_s", "e2e_s", "errors"):
            setattr(point, name, getattr(report, name))

    def _eta(self, index: int, total: int, share: float) -> Optional[float]:
        if not self._point_times:
            return None
        per = sum(self._point_times) / len(self._point_times)
        return per * (total - index - share)

    def _check_alive(self, point: Point) -> None:
        if point.refused is None and point.ok == 0 and _connection_lost_errors(point.errors):
            self._raise_if_dead(f"measuring point {point.index + 1}")

    def _raise_if_dead(self, doing: str) -> None:
        try:
            self.http.get(self.url + "/health", timeout=5)
        except httpx.HTTPError as exc:
            raise _Stop(f"the engine stopped answering while {doing} ({type(exc).__name__}: {exc})") from None

    def _restore(self, record: SweepRecord) -> None:
        """Put back the configuration in force when the sweep started."""
        if not self._changed or record.config_found is None:
            return
        try:
            response = self.http.put(self.url + "/admin/config", json=record.config_found)
            record.restored = response.status_code == 200
            if not record.restored:
                record.restore_error = f"PUT /admin/config answered {response.status_code}: {_message(response)}"
        except httpx.HTTPError as exc:
            record.restored = False
            record.restore_error = f"the configuration could not be restored: {type(exc).__name__}: {exc}"


def _connection_lost(report) -> bool:
    return _connection_lost_errors(report.errors)


def _connection_lost_errors(errors: dict) -> bool:
    return "connection" in (errors or {})


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text[:300]
    if isinstance(error, dict) and error.get("message"):
        return error["message"]
    return response.text[:300]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- the table

def format_table(record: SweepRecord) -> str:
    """One line per point; ``*`` marks the Pareto front, ``>`` the recommended point."""
    def ms(value: Optional[float]) -> str:
        return "   N/A" if value is None else f"{value * 1000:6.0f}"

    rec = record.recommended.index if record.recommended else None
    lines = ["    #  conc   tok/s  ratio  TTFT p50/p99 ms   ITL p50/p99 ms   E2E p50/p99 ms  slo  settings"]
    for p in record.points:
        mark = (">" if p.index == rec else " ") + ("*" if p.pareto else " ")
        settings = ", ".join(f"{k}={v}" for k, v in p.config.items()) or "(in force)"
        if p.reference:
            settings = "reference " + settings
        if p.refused:
            lines.append(f"{mark}{p.index:3d}  {p.concurrency:4d}  refused: {p.refused}  [{settings}]")
            continue
        tps = "    N/A" if p.output_tokens_per_s is None else f"{p.output_tokens_per_s:7.1f}"
        ratio = f"{p.ratio:5.2f}x" if p.ratio is not None else "   -  "
        errors = f"  errors {p.errors}" if p.errors else ""
        lines.append(f"{mark}{p.index:3d}  {p.concurrency:4d} {tps} {ratio} {ms(p.ttft_s['p50'])}/{ms(p.ttft_s['p99'])}"
                     f"    {ms(p.itl_s['p50'])}/{ms(p.itl_s['p99'])}   {ms(p.e2e_s['p50'])}/{ms(p.e2e_s['p99'])}"
                     f"  {'yes' if p.meets_slo else ' no'}  {settings}{errors}")
    return "\n".join(lines)
