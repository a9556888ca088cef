"""Running a sweep against a server (torch-free): the reference first, then each grid combination
applied with ``PUT /admin/config``, warmed up and measured with ``engine.bench``; the settings
found are put back at the end, on cancel and after a fault."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import httpx

from engine import bench, records
from engine.tuning.experiment import RUNTIME_SECTIONS, Objective, Point, Workload, expand_grid, sections
from engine.tuning.record import SweepRecord

WARMUP_TOKENS = 2
INDEX_STRIDE = 100_000        # prompt indexes per step: no point reuses another's prompts
SECONDS_CAP = 100_000         # requests cap of a level bounded by time


class SweepError(RuntimeError):
    """The sweep cannot start: no model served, or a grid against a server without our /admin API."""


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
        status = status or {}
        # engine.records is what a run record says too, so an export from this sweep agrees with one
        # from the running engine; the fingerprint is None when the served folder is not visible here
        fingerprint = records.model_fingerprint(status["path"]) if status.get("path") else None
        return SweepRecord(
            url=self.url, model=model, workload=asdict(self.workload), grid=self.grid,
            objective=asdict(self.objective), id=started.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex(),
            started=started.isoformat(timespec="seconds"), model_fingerprint=fingerprint,
            hardware={**records.hardware_summary(), "engine_device": status.get("device"),
                      "engine_dtype": status.get("dtype")},
            versions=records.software_versions(), admin=admin, config_found=found)

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


