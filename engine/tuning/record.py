"""Judging a sweep's points (Pareto front, SLO, recommendation) and the record kept of a sweep:
one JSON file per run (``deepseek-engine export --from sweep.json#N`` reads it)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from engine.staging import atomic_write_text
from engine.tuning.experiment import Objective, Point

RECORD_FORMAT = "deepseek-tune/1"


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
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

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
