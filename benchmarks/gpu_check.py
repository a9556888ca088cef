"""The GPU check: one script for the day an NVIDIA GPU is at hand (no network needed there).

On ``--device cuda`` (default) it runs in well under 8 minutes and writes ``gpu_check.json`` (every
step's figures, its time, what failed) and ``gpu_check.csv`` (the bench rows) into ``--out``:

  1. prerequisites: the modules the check needs; the missing ones are installed from the wheels
     carried beside this script (``--wheels``, default benchmarks/wheels; made on a networked
     machine with ``--prepare-wheels DIR``). Such a machine typically has torch, transformers
     and nvidia-ml-py, and lacks FastAPI, uvicorn, PySide6, pyqtgraph (and this project).
  2. machine: ``deepseek-engine doctor``'s readings and findings (driver, CUDA build, memory).
  3. models, built on the spot with random weights (no download): a ~1B-parameter Llama and a
     tiny DeepSeek-V3 (MLA + MoE).
  4. load: each through ``POST /admin/load`` in bfloat16, its progress events counted; the memory
     estimate against what the worker holds (its weights metric, and NVML's reading of its VRAM).
  5. monitor: ``deepseek-engine monitor`` for a few seconds: its GPU columns must not be N/A.
  6. bench at concurrency 1/8/32/64 in dynamic and continuous modes (two workers in all), against in-process
     ``generate`` one at a time and a static batch on the same GPU (ratios in the CSV).
  7. prefix cache: TTFT of a long prompt cold, then warm.
  8. the Monitor panel offscreen against the worker: its GPU rows, and a screenshot.

``--device cpu --quick`` is the dry run the test suite runs (tests/test_gpu_check.py), so the
script cannot rot between GPU runs: tiny models, levels 1 and 8, float32-sized steps; the GPU
fields are then recorded as N/A, as they are.

Usage: python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--out DIR] [--wheels DIR]
       python benchmarks/gpu_check.py --prepare-wheels DIR   (on a machine with network)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
# import name -> what pip installs (the wheels carried beside the script)
NEEDED = {"fastapi": "fastapi", "uvicorn": "uvicorn[standard]", "httpx": "httpx", "pydantic": "pydantic",
          "prometheus_client": "prometheus-client", "platformdirs": "platformdirs", "tomli_w": "tomli-w",
          "yaml": "PyYAML", "psutil": "psutil", "PySide6": "PySide6-Essentials<6.12", "pyqtgraph": "pyqtgraph",
          "pynvml": "nvidia-ml-py", "safetensors": "safetensors", "tokenizers": "tokenizers",
          "accelerate": "accelerate", "gguf": "gguf", "jinja2": "jinja2", "grpc": "grpcio",
          "markdown_it": "markdown-it-py", "pygments": "Pygments", "huggingface_hub": "huggingface-hub"}
ALREADY_THERE = ("torch", "transformers")  # a GPU machine has its own CUDA build: never replaced


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def prepare_wheels(folder: Path) -> int:
    """On a machine with network: download what a GPU machine lacks, and this project as a wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    packages = sorted(set(NEEDED.values()))
    steps = [[sys.executable, "-m", "pip", "download", "-d", str(folder), *packages],
             [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder), str(ROOT)]]
    for step in steps:
        if subprocess.run(step).returncode != 0:
            return 1
    print(f"wheels in {folder}: carry it beside gpu_check.py (benchmarks/wheels) to the GPU machine")
    return 0


def install_prerequisites(wheels: Path) -> dict:
    missing = missing_modules()
    project = importlib.util.find_spec("engine") is not None or (ROOT / "engine").is_dir()
    step = {"missing": missing, "installed": [], "wheels": str(wheels), "torch_present": _has("torch"),
            "transformers_present": _has("transformers")}
    if missing:
        if not wheels.is_dir():
            raise RuntimeError(f"missing {', '.join(missing)} and no wheels at {wheels}: run "
                               f"'python benchmarks/gpu_check.py --prepare-wheels {wheels}' on a machine with network")
        packages = [NEEDED[name] for name in missing]
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *packages]
        subprocess.run(command, check=True)
        step["installed"] = packages
    if not project:
        raise RuntimeError("the project (engine, deepseek_desktop) is not importable: run from its checkout")
    return step


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Check:
    """The report: each step's result or its error, and its time."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict = {"device": args.device, "quick": args.quick, "started": time.time(),
                             "python": sys.version.split()[0], "platform": platform.platform(), "steps": {}}
        self.rows: list[dict] = []

    def step(self, name: str, work, *args):
        started = time.perf_counter()
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            result = work(*args)
            self.report["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - started, 2),
                                          **(result or {})}
            return result
        except Exception as exc:
            self.report["steps"][name] = {"ok": False, "seconds": round(time.perf_counter() - started, 2),
                                          "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
            print(f"   {name} failed: {exc}", file=sys.stderr, flush=True)
            return None

    def write(self) -> None:
        self.report["seconds"] = round(time.time() - self.report["started"], 1)
        self.report["ok"] = all(step["ok"] for step in self.report["steps"].values())
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str))
        if self.rows:
            with open(self.out / "gpu_check.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)


# ----------------------------------------------------------------------------- steps


def machine_step() -> dict:
    from engine import doctor

    readings = doctor.read_machine()
    findings = doctor.diagnose(readings)
    return {"readings": doctor.as_json(readings, findings)["readings"],
            "findings": [f"{f.level}: {f.check}: {f.says}" for f in findings]}


def build_models(folder: Path, quick: bool) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models

    tokenizer = folder / "tokenizer"
    tiny_models.train_tokenizer(tokenizer)
    # ~1.03B parameters: 22 layers of hidden 2048 (GQA 16/8 heads) and a 5632 MLP.
    big = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=16,
               num_key_value_heads=8, max_position_embeddings=4096, max_shard_size="1GB")
    small = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, max_position_embeddings=2048)
    llama = tiny_models.build_model("llama", folder / ("llama-small" if quick else "llama-1b"), tokenizer,
                                    **(small if quick else big))
    deepseek = tiny_models.build_model("deepseek_v3", folder / "tiny-deepseek-v3", tokenizer,
                                       max_position_embeddings=2048)
    from engine.catalog import inspect_path

    return {"llama": str(llama), "deepseek_v3": str(deepseek),
            "llama_params": inspect_path(llama).params, "deepseek_v3_params": inspect_path(deepseek).params}


def start_engine(device: str, *args: str):
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import EngineServer

    return EngineServer(None, extra_args=["--device", device, *args]).start(wait_ready=False)


def load_with_progress(server, model: str, device: str, dtype: str) -> dict:
    """POST /admin/load and follow /admin/events until the model is ready (or failed)."""
    import httpx

    progress, started, loading = [], time.perf_counter(), False  # the stream first says the state before
    with httpx.stream("GET", server.url + "/admin/events", headers=server.headers, timeout=httpx.Timeout(10, read=600)) as events:
        response = httpx.post(server.url + "/admin/load", headers=server.headers, timeout=30,
                              json={"path": model, "dtype": dtype, "device": device})
        if response.status_code >= 300:
            raise RuntimeError(f"/admin/load: {response.status_code} {response.text[:300]}")
        for line in events.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event.get("type") == "progress":
                progress.append(event)
            elif event.get("type") == "state" and event.get("state") == "loading":
                loading = True
            elif event.get("type") == "state" and event.get("state") in ("ready", "error") and loading:
                if event["state"] == "error":
                    raise RuntimeError(f"load failed: {event.get('error')}")
                break
    return {"seconds_to_ready": round(time.perf_counter() - started, 2), "progress_events": len(progress),
            "bytes_total": progress[-1].get("bytes_total") if progress else None}


def estimate_vs_actual(server, model: str, device: str, dtype: str) -> dict:
    from engine.catalog import inspect_path
    from engine.memory import estimate
    from engine.telemetry.gpu import GpuSource

    predicted = estimate(inspect_path(Path(model)), dtype, device="cuda" if device.startswith("cuda") else "cpu")
    weights = server.metric("engine_model_weights_bytes")
    out = {"estimate_weights_bytes": predicted.weights_bytes, "estimate_total_bytes": predicted.total_bytes,
           "weights_metric_bytes": weights, "weights_ratio_actual_to_estimate": weights / predicted.weights_bytes}
    source = GpuSource()
    if source.available:
        snaps = source.snapshot(frozenset({server.proc.pid}))
        used = sum(s.engine_bytes or 0 for s in snaps)
        out.update({"nvml_worker_bytes": used, "nvml_ratio_to_estimate_total": used / predicted.total_bytes})
    else:
        out["nvml_worker_bytes"] = None  # N/A: no GPU (the dry run)
    return out


def monitor_step(server, out: Path, device: str) -> dict:
    path = out / "monitor.csv"
    subprocess.run([sys.executable, "-m", "engine", "monitor", "--url", server.url, "--api-key", server.api_key,
                    "--worker-pid", str(server.proc.pid), "--duration", "4", "--interval", "1", "--csv", str(path)],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    rows = list(csv.DictReader(path.open()))
    gpu = {k: v for k, v in rows[-1].items() if k.startswith("gpu0_")}
    na = sorted(k for k, v in gpu.items() if v in ("", "N/A", "nan", None))
    if device.startswith("cuda") and any(k in na for k in ("gpu0_util_pct", "gpu0_mem_used_bytes")):
        raise RuntimeError(f"NVML readings are N/A on a GPU machine: {na}")
    return {"rows": len(rows), "gpu0": gpu, "gpu0_na": na, "engine_rss": rows[-1].get("worker_rss_bytes")}


def baseline_step(model: str, device: str, dtype: str, prompt_tokens: int, output_tokens: int, batch: int) -> dict:
    """In-process ``generate`` on the same device: one at a time, and a static batch."""
    import statistics

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from engine.bench import make_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    net = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
    config = GenerationConfig(max_new_tokens=output_tokens, min_new_tokens=output_tokens, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)

    def run(count: int) -> float:
        inputs = tokenizer([make_prompt(prompt_tokens, 0, i) for i in range(count)], return_tensors="pt",
                           padding=True).to(device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            net.generate(**inputs, generation_config=config)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return count * output_tokens / (time.perf_counter() - started)

    run(1)
    result = {"sequential_tokens_per_s": statistics.median(run(1) for _ in range(2)),
              "static_batch_tokens_per_s": run(batch), "batch": batch}
    del net
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def bench_mode(check: Check, server, mode: str, model: str, levels: list[int], requests: int, prompt_tokens: int,
               output_tokens: int, baseline: Optional[dict]) -> dict:
    """``bench`` at each level on a server in ``mode`` with ``model`` loaded; rows to the CSV with
    their ratios to in-process ``generate`` (one at a time, and a static batch)."""
    from engine import bench

    figures = {}
    for level in levels:
        report = asyncio.run(bench.run_level(server.url, server.api_key, Path(model).name, level, max(requests, level),
                                             prompt_tokens, output_tokens, first_index=level * 1000))
        ratios = {"vs_generate_one_at_a_time": None, "vs_static_batch": None}
        if baseline:
            ratios = {"vs_generate_one_at_a_time": report.output_tokens_per_s / baseline["sequential_tokens_per_s"],
                      "vs_static_batch": report.output_tokens_per_s / baseline["static_batch_tokens_per_s"]}
        check.rows.append({"model": Path(model).name, "mode": mode, **report.row(), **ratios})
        figures[f"{mode}@{level}"] = {"tokens_per_s": round(report.output_tokens_per_s, 1),
                                      "ttft_p99_s": report.ttft_s["p99"], "ok": report.ok, "requests": report.requests}
        if report.ok != report.requests:
            raise RuntimeError(f"{mode} at {level}: {report.requests - report.ok} requests failed: {report.errors}")
    if mode == "dynamic":
        figures["prefix_cache"] = prefix_cache_ttft(server, Path(model).name, prompt_tokens * 4)
    return figures


def prefix_cache_ttft(server, model: str, prompt_tokens: int) -> dict:
    """The same long prompt twice: the second reuses the prefix KV the first left."""
    from engine import bench

    async def once():
        return await bench.run_level(server.url, server.api_key, model, 1, 1, prompt_tokens, 4,
                                     shared_prefix_tokens=prompt_tokens - 8, first_index=77)
    cold, warm = asyncio.run(once()), asyncio.run(once())
    c, w = cold.ttft_s["p50"], warm.ttft_s["p50"]
    return {"prompt_tokens": prompt_tokens, "cold_ttft_s": c, "warm_ttft_s": w, "warm_to_cold": w / c if c else None}


MONITOR_PANEL = r"""
import json, sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from deepseek_desktop.telemetry import TelemetryModel
from deepseek_desktop.panels.monitor import MonitorPanel
url, key, pid, png = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = TelemetryModel(interval_s=0.5)
panel = MonitorPanel(model)
panel.resize(1200, 800)
panel.show()
rows = []
model.row_added.connect(rows.append)
model.attach(url, key, pid)
model.start()
deadline = time.monotonic() + 30
while len(rows) < 4 and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.05)
panel.grab().save(png)
model.stop()
last = rows[-1] if rows else {}
print(json.dumps({"rows": len(rows), "gpus": model.gpu_count, "gpu_reason": model.gpu_reason,
                  "gpu0": {k: v for k, v in last.items() if k.startswith("gpu0_")},
                  "engine_requests_running": last.get("engine_requests_running")}, default=str))
"""


def monitor_panel_step(server, out: Path, device: str) -> dict:
    png = out / "monitor_panel.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", MONITOR_PANEL, server.url, server.api_key, str(server.proc.pid),
                             str(png)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    if seen["rows"] < 4 or not png.exists():
        raise RuntimeError(f"the Monitor drew {seen['rows']} rows")
    if device.startswith("cuda") and not seen["gpus"]:
        raise RuntimeError(f"the Monitor shows no GPU: {seen['gpu_reason']}")
    return {**seen, "screenshot": str(png)}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the dry run)")
    parser.add_argument("--quick", action="store_true", help="tiny models, levels 1 and 8 (the dry run)")
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "gpu-check"))
    parser.add_argument("--wheels", default=str(Path(__file__).resolve().parent / "wheels"))
    parser.add_argument("--prepare-wheels", metavar="DIR", help="download the wheels a GPU machine lacks, then exit")
    args = parser.parse_args(argv)
    if args.prepare_wheels:
        return prepare_wheels(Path(args.prepare_wheels))
    check = Check(args)
    if check.step("prerequisites", install_prerequisites, Path(args.wheels)) is None:
        check.write()
        return 1
    device, dtype = args.device, "bfloat16"
    levels = [1, 8] if args.quick else [1, 8, 32, 64]
    requests, prompt_tokens, output_tokens = (4, 32, 6) if args.quick else (64, 128, 64)
    check.step("machine", machine_step)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    models = check.step("models", build_models, work, args.quick)
    if models is None:
        check.write()
        return 1
    baseline = check.step("baseline", baseline_step, models["llama"], device, dtype, prompt_tokens, output_tokens,
                          max(levels))
    bench_args = (levels, requests, prompt_tokens, output_tokens, baseline)
    # Two workers in all (each start costs seconds): the dynamic one also serves the monitor steps,
    # the continuous one then loads the DeepSeek-V3 in the 1B's place.
    server = start_engine(device, "--batching-mode", "dynamic")
    try:
        if check.step("load_llama", load_with_progress, server, models["llama"], device, dtype) is not None:
            check.step("estimate_llama", estimate_vs_actual, server, models["llama"], device, dtype)
            check.step("monitor", monitor_step, server, check.out, device)
            check.step("monitor_panel", monitor_panel_step, server, check.out, device)
            check.step("bench_dynamic", bench_mode, check, server, "dynamic", models["llama"], *bench_args)
    finally:
        server.stop()
    server = start_engine(device, "--batching-mode", "continuous")
    try:
        if check.step("load_llama_continuous", load_with_progress, server, models["llama"], device, dtype):
            check.step("bench_continuous", bench_mode, check, server, "continuous", models["llama"], *bench_args)
        if check.step("load_deepseek_v3", load_with_progress, server, models["deepseek_v3"], device, dtype):
            check.step("estimate_deepseek_v3", estimate_vs_actual, server, models["deepseek_v3"], device, dtype)
    finally:
        server.stop()
    check.write()
    print(json.dumps({name: {k: v for k, v in step.items() if k != "trace"}
                      for name, step in check.report["steps"].items()}, indent=1, default=str)[:6000])
    print(f"report: {check.out / 'gpu_check.json'} ({check.report['seconds']} s, "
          f"{'all steps passed' if check.report['ok'] else 'SOME STEPS FAILED'})")
    return 0 if check.report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
