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

Modules: ``experiment`` (grid, workload, objective, point), ``record`` (judging, the kept JSON
record, the table), ``sweep`` (running one against a server).
"""

from engine.tuning.experiment import (
    ASK_ABOVE_POINTS, LATENCIES, RUNTIME_SECTIONS, GridError, Objective, Point, Workload, count_points,
    expand_grid, load_grid, parse_grid, runtime_fields, sections, to_toml,
)
from engine.tuning.record import (
    RECORD_FORMAT, SweepRecord, format_table, front, judge, keep, list_records, margin, meets_slo, pareto_flags,
    reference_for, score, sweeps_dir,
)
from engine.tuning.sweep import Sweep, SweepError

__all__ = [
    "ASK_ABOVE_POINTS", "LATENCIES", "RECORD_FORMAT", "RUNTIME_SECTIONS", "GridError", "Objective", "Point",
    "Sweep", "SweepError", "SweepRecord", "Workload", "count_points", "expand_grid", "format_table", "front",
    "judge", "keep", "list_records", "load_grid", "margin", "meets_slo", "pareto_flags", "parse_grid",
    "reference_for", "runtime_fields", "score", "sections", "sweeps_dir", "to_toml",
]
