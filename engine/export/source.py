"""Where an export comes from: a running engine, a config TOML (or preset), a sweep point, a run record.

Each loader returns an :class:`ExportSource`: the engine configuration to export plus what is
known about its origin (model, fingerprint, date, sweep point, figures, hardware) and what is not
(``unknown``). Every failure is an :class:`ExportError` whose message a person can act on.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.config import ConfigError, EngineConfig
from engine.records import RECORD_KIND, model_summary
from engine.telemetry.engine_metrics import parse


class ExportError(ValueError):
    """A source that cannot be read or a target that cannot be written; the message says which and why."""


@dataclass
class ExportSource:
    """What an export renders.

    Attributes:
        config: the engine configuration (secrets are never exported).
        origin: one line on where it came from ("engine at http://…", "sweep run.json point 3").
        model: name, path, fingerprint, params, dtype, format (``engine.records.model_summary``).
        created: when the source was measured or recorded (ISO 8601), if known.
        point: the sweep point: its index, the dotted keys it set and its figures.
        figures: the latest bench or sweep figures (a run record carries them).
        status: ``GET /admin/status`` of a running engine.
        hardware, software: of the machine the source was measured on (a record or a sweep).
        foreign: the kind of server when it is not ours ("vLLM"); its settings are partly unknown.
        unknown: what the source could not tell, one sentence each.
        sampling: sampling defaults (a preset's ``[sampling]`` table).
    """

    config: EngineConfig
    origin: str
    model: dict[str, Any] = field(default_factory=dict)
    created: Optional[str] = None
    point: Optional[dict[str, Any]] = None
    figures: Optional[dict[str, Any]] = None
    status: Optional[dict[str, Any]] = None
    hardware: Optional[dict[str, Any]] = None
    software: Optional[dict[str, Any]] = None
    foreign: Optional[str] = None
    unknown: list[str] = field(default_factory=list)
    sampling: Optional[dict[str, Any]] = None

    @property
    def device(self) -> str:
        """The device the source ran on (the status's when the config says ``auto``)."""
        configured = self.config.model.device
        if configured != "auto":
            return configured
        running = (self.status or {}).get("device")
        return running or "auto"

    @property
    def context_length(self) -> Optional[int]:
        return (self.config.model.max_context or (self.status or {}).get("context_length")
                or self.model.get("context_length"))

    @classmethod
    def from_sweep(cls, record: dict[str, Any], index: int, origin: str = "sweep",
                   base: Optional[EngineConfig] = None) -> "ExportSource":
        """One point of a sweep record (``engine.tuning``'s JSON): its dotted keys over the sweep's base.

        Args:
            base: the configuration the sweep ran on (e.g. the running engine's); the record itself
                keeps only the run-time sections it found (``config_found``), so without ``base``
                the model path and the server settings are unknown.
        Raises:
            ExportError: the record is not a sweep, or it has no point ``index``.
        """
        return _from_sweep(record, index, origin, base)


# ---------------------------------------------------------------------------- running engines


def from_engine(url: str, api_key: Optional[str] = None, timeout: float = 10.0) -> ExportSource:
    """Read a running engine: ours through ``/admin/config`` and ``/admin/status``; another
    OpenAI-compatible server (vLLM) through ``/v1/models`` and ``/metrics``, saying what is unknown.

    Raises:
        ExportError: unreachable, the key refused, or not an OpenAI-compatible server.
    """
    import httpx

    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            config = client.get("/admin/config")
            _check_key(config, url)
            if config.status_code == 200:
                status = client.get("/admin/status")
                return _ours(url, config.json(), status.json() if status.status_code == 200 else None)
            return _foreign(url, client)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot read the engine at {url}: {type(exc).__name__}: {exc}") from None


def _check_key(response, url: str) -> None:
    if response.status_code in (401, 403):
        raise ExportError(f"the engine at {url} refused the API key ({response.status_code}): "
                          "pass the key it was started with (--api-key)")


def _ours(url: str, public: dict[str, Any], status: Optional[dict[str, Any]]) -> ExportSource:
    data = {section: dict(values) for section, values in public.items()}
    server = data.get("server", {})
    # Named keys come back without their secret: only those read from a variable can be kept.
    server["keys"] = [k for k in server.get("keys", []) if k.get("key_env")]
    try:
        config = EngineConfig.from_dict(data)
    except ConfigError as exc:
        raise ExportError(f"the engine at {url} sent a configuration this version cannot read: {exc}") from None
    status = status or {}
    summary = model_summary(status.get("path") or config.model.path, status.get("model") or config.model.served_model_name,
                            status.get("dtype") or config.model.dtype)
    source = ExportSource(config=config, origin=f"engine at {url}", model=summary, status=status or None)
    dropped = [k["name"] for k in public.get("server", {}).get("keys", []) if not k.get("key_env")]
    if dropped:
        source.unknown.append(f"named keys {', '.join(dropped)}: the engine never sends a key back; "
                              "add them again (key_env or key_sha256)")
    if not status.get("path"):
        source.unknown.append("no model was loaded: the model section is the configured one")
    return source


def _foreign(url: str, client) -> ExportSource:
    models = client.get("/v1/models")
    _check_key(models, url)
    if models.status_code != 200:
        raise ExportError(f"{url} is neither this engine (no /admin/config) nor an OpenAI-compatible server "
                          f"(GET /v1/models answered {models.status_code})")
    try:
        first = models.json()["data"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ExportError(f"{url}: GET /v1/models lists no model") from None
    metrics = client.get("/metrics")
    info = _vllm_cache_info(metrics.text if metrics.status_code == 200 else "")
    kind = "vLLM" if info is not None or first.get("owned_by") == "vllm" else "an OpenAI-compatible server"
    root = first.get("root") if isinstance(first.get("root"), str) else None
    model: dict[str, Any] = {"path": root, "served_model_name": first.get("id")}
    if isinstance(first.get("max_model_len"), int):
        model["max_context"] = first["max_model_len"]
    batching: dict[str, Any] = {"mode": "continuous"}
    cache: dict[str, Any] = {}
    info = info or {}
    if info.get("block_size", "").isdigit() and int(info["block_size"]) >= 4:
        batching["page_size"] = int(info["block_size"])
    if info.get("enable_prefix_caching") in ("True", "False"):
        batching["block_sharing"] = info["enable_prefix_caching"] == "True"
    try:
        config = EngineConfig.from_dict({"model": model, "batching": batching, "cache": cache})
    except ConfigError as exc:
        raise ExportError(f"{url}: what /v1/models tells cannot be expressed: {exc}") from None
    source = ExportSource(config=config, origin=f"{kind} at {url}", foreign=kind,
                          model=model_summary(root, first.get("id")))
    told = ["model id and path (/v1/models)"] + (["max_model_len"] if "max_context" in model else [])
    if info:
        told.append("block size and prefix caching (vllm:cache_config_info)")
    source.unknown.append(f"{kind} tells only: {', '.join(told)}; every other setting (batch size, token "
                          "budget, dtype, device, memory share, host/port, keys) is unknown and left at this "
                          "engine's defaults")
    return source


def _vllm_cache_info(text: str) -> Optional[dict[str, str]]:
    """The labels of vLLM's ``vllm:cache_config_info`` gauge, or None."""
    try:
        series = parse(text).get("vllm:cache_config_info")
    except ValueError:  # not Prometheus' text format: another server's page
        return None
    return dict(next(iter(series))) if series else None


# ---------------------------------------------------------------------------- files


def from_file(spec: str) -> ExportSource:
    """``config.toml`` (a preset too), ``sweep.json#N`` (point N of a sweep record) or ``record.json``.

    Raises:
        ExportError: missing, unreadable, or a file of another kind.
    """
    path_text, _, fragment = spec.partition("#")
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"source file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if path.suffix == ".toml":
        if fragment:
            raise ExportError(f"{spec}: '#N' picks a point of a sweep record; {path} is a config TOML")
        return _from_toml(path, text)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExportError(f"{path} is neither a config TOML nor JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("points"), list):
        return _from_sweep(data, _point_index(spec, fragment, data), f"sweep {path}")
    if isinstance(data, dict) and data.get("kind") == RECORD_KIND:
        return from_record(data, f"run record {path}")
    raise ExportError(f"{path} is not a file export reads: expected a config TOML, a sweep record "
                      f"(with 'points') or a run record (kind {RECORD_KIND!r})")


def _from_toml(path: Path, text: str) -> ExportSource:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExportError(f"{path} is not valid TOML: {exc}") from None
    sampling = data.pop("sampling", None)
    try:
        config = EngineConfig.from_dict(data)
    except ConfigError as exc:
        raise ExportError(f"{path}: {exc}") from None
    return ExportSource(config=config, origin=f"config {path}", sampling=sampling,
                        model=model_summary(config.model.path, config.model.served_model_name, config.model.dtype))


def _point_index(spec: str, fragment: str, record: dict[str, Any]) -> int:
    if not fragment:
        raise ExportError(f"{spec} is a sweep record: name one of its {len(record['points'])} points, "
                          f"e.g. {spec}#0")
    if not fragment.isdigit():
        raise ExportError(f"{spec}: the point must be a number (its index in 'points'), got {fragment!r}")
    return int(fragment)


def _from_sweep(record: dict[str, Any], index: int, origin: str, base: Optional[EngineConfig] = None) -> ExportSource:
    points = record.get("points")
    if not isinstance(points, list):
        raise ExportError(f"{origin}: not a sweep record (no 'points' list)")
    if not 0 <= index < len(points):
        held = f"it has {len(points)}: 0 to {len(points) - 1}" if points else "it has no points"
        raise ExportError(f"{origin}: no point {index} ({held})")
    point = points[index]
    if not isinstance(point, dict) or not isinstance(point.get("config", {}), dict):
        raise ExportError(f"{origin}: point {index} has no 'config' table of dotted keys")
    if point.get("refused"):
        raise ExportError(f"{origin}: point {index} was refused by the engine ({point['refused']}); "
                          "it has no settings to export")
    known = base is not None
    base = _sweep_base(record, origin, base)
    try:
        config = base.with_overrides(point.get("config") or {})
    except ConfigError as exc:
        raise ExportError(f"{origin} point {index}: {exc}") from None
    model = dict(record["model"]) if isinstance(record.get("model"), dict) else {"name": record.get("model")}
    model.setdefault("fingerprint", record.get("model_fingerprint"))
    summary = model_summary(config.model.path, config.model.served_model_name or model.get("name"), config.model.dtype)
    for key, value in model.items():  # what the sweep recorded wins over what this machine can tell
        if value is not None and key in summary:
            summary[key] = value
    figures = {k: point.get(k) for k in ("concurrency", "output_tokens_per_s", "ttft_s", "itl_s", "e2e_s", "errors",
                                          "pareto", "meets_slo") if k in point}
    source = ExportSource(config=config, origin=f"{origin} point {index}", model=summary,
                          created=record.get("started") or record.get("created"),
                          point={"index": index, "config": point.get("config") or {}, **figures},
                          figures={"sweep": {"workload": record.get("workload"), "objective": record.get("objective"),
                                             "point": figures}},
                          hardware=record.get("hardware"), software=record.get("versions") or record.get("software"))
    if not known and not config.model.path:
        source.unknown.append("the sweep record keeps only the run-time settings it found ([batching], [cache]): "
                              "the model path and [server] are this engine's defaults (export --model PATH sets "
                              "the path)")
    return source


def _sweep_base(record: dict[str, Any], origin: str, base: Optional[EngineConfig]) -> EngineConfig:
    """The configuration in force when the sweep started: ``base`` (or defaults) under what the
    record found (``config_found``: the run-time sections), so the point's keys apply on top."""
    data = base.model_dump(mode="json", context={"reveal_secrets": True}) if base is not None else {}
    for key in ("config_found", "engine_config"):
        found = record.get(key)
        if isinstance(found, dict):
            for section, values in found.items():
                if isinstance(values, dict):
                    data[section] = {**data.get(section, {}), **values}
    if isinstance(record.get("model"), dict) and record["model"].get("path"):
        data.setdefault("model", {}).setdefault("path", record["model"]["path"])
    data.get("server", {}).pop("keys", None)
    try:
        return EngineConfig.from_dict(data)
    except ConfigError as exc:
        raise ExportError(f"{origin}: the configuration it found is not one this version reads: {exc}") from None


def from_record(record: dict[str, Any], origin: str = "run record") -> ExportSource:
    """A run record written by ``export --format record``.

    Raises:
        ExportError: a record of another kind or version, or one whose config does not validate.
    """
    if record.get("kind") != RECORD_KIND:
        raise ExportError(f"{origin}: not a run record of this project (kind {record.get('kind')!r})")
    from engine.records import RECORD_VERSION

    if record.get("version") != RECORD_VERSION:
        raise ExportError(f"{origin}: record version {record.get('version')!r}; this version reads {RECORD_VERSION}")
    try:
        config = EngineConfig.from_dict(record["config"])
    except (KeyError, TypeError):
        raise ExportError(f"{origin}: it holds no 'config' table") from None
    except ConfigError as exc:
        raise ExportError(f"{origin}: its config does not validate: {exc}") from None
    return ExportSource(config=config, origin=f"{origin} ({record.get('source', 'unknown origin')})",
                        model=record.get("model") or {}, created=record.get("created"),
                        point=(record.get("figures") or {}).get("sweep_point"), figures=record.get("figures"),
                        status=record.get("status"), hardware=record.get("hardware"), software=record.get("software"),
                        unknown=list(record.get("unknown") or []), sampling=record.get("sampling"))


def with_model_path(source: ExportSource, path: str) -> ExportSource:
    """The same source with ``model.path`` set (export for a box where the model lives elsewhere).

    Raises:
        ExportError: the path is refused by the configuration.
    """
    try:
        source.config = source.config.with_overrides({"model.path": path})
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    summary = model_summary(path, source.model.get("name") or source.config.model.served_model_name,
                            source.config.model.dtype)
    source.model = {**source.model, **{k: v for k, v in summary.items() if v is not None}, "path": path}
    source.unknown = [u for u in source.unknown if "export --model PATH" not in u]
    return source
