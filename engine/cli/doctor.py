"""``deepseek-engine doctor``: what stands between this machine and a running model (driver, CUDA,
torch's build, memory for the model, disks, the port, the model folder, PySide6, the HF cache)."""

from __future__ import annotations

import json


def add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check the machine for what stops a model running here, and say what to do")
    p.add_argument("--config", help="engine TOML: its model, dtype and port are checked")
    p.add_argument("--model", help="a model folder (or .gguf, or 'demo') to check and size against free memory")
    p.add_argument("--port", type=int, help="a port the engine should listen on (checked free)")
    p.add_argument("--json", action="store_true", help="the findings and readings as JSON")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    """Exit 0 when nothing blocks (warnings and notes allowed), 1 otherwise."""
    from engine import doctor
    from engine.config import EngineConfig
    from engine.paths import demo_model_dir

    config = EngineConfig.from_toml(args.config) if args.config else EngineConfig()
    model = args.model or config.model.path
    if model == "demo":
        model = str(demo_model_dir())
    port = args.port if args.port is not None else (config.server.port if args.config else None)
    readings = doctor.read_machine(model, port or None, config.server.host, config.model.dtype)
    findings = doctor.diagnose(readings)
    if args.json:
        print(json.dumps(doctor.as_json(readings, findings), indent=2))
    else:
        print(doctor.report(findings))
    return 1 if doctor.blocking(findings) else 0
