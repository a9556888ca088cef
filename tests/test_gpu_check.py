"""benchmarks/gpu_check.py's CPU dry run (``--device cpu --quick``): every step of the GPU check
runs here on tiny models, so the script cannot rot between GPU runs. The GPU readings are N/A
here and the report says so; on a GPU machine the same steps require them."""

import csv
import json
import subprocess
import sys

from helpers import ROOT


def test_gpu_check_dry_run_on_the_cpu_writes_its_report_and_csv(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick",
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {name: step.get("error") for name, step in report["steps"].items() if not step["ok"]}
    assert result.returncode == 0 and report["ok"], (failed, result.stderr[-3000:])
    steps = report["steps"]
    assert list(steps) == ["prerequisites", "machine", "models", "baseline", "load_llama", "estimate_llama", "monitor",
                           "monitor_panel", "bench_dynamic", "load_llama_continuous", "bench_continuous",
                           "load_deepseek_v3", "estimate_deepseek_v3"]
    assert steps["prerequisites"]["missing"] == []  # .[test] has all; a GPU machine installs from wheels
    for name in ("llama", "deepseek_v3"):
        assert steps[f"load_{name}"]["progress_events"] >= 1
        assert 0.9 < steps[f"estimate_{name}"]["weights_ratio_actual_to_estimate"] < 1.2
        assert steps[f"estimate_{name}"]["nvml_worker_bytes"] is None  # no GPU: N/A, not 0
    assert "gpu0_mem_used_bytes" in steps["monitor"]["gpu0_na"] and steps["monitor"]["rows"] >= 3
    assert steps["monitor_panel"]["rows"] >= 4 and (tmp_path / "monitor_panel.png").stat().st_size > 1000
    assert {"dynamic@1", "dynamic@8"} <= set(steps["bench_dynamic"])
    assert {"continuous@1", "continuous@8"} <= set(steps["bench_continuous"])
    prefix = steps["bench_dynamic"]["prefix_cache"]
    assert prefix["cold_ttft_s"] > 0 and prefix["warm_ttft_s"] > 0
    rows = list(csv.DictReader((tmp_path / "gpu_check.csv").open()))
    assert [(r["mode"], r["concurrency"]) for r in rows] == [("dynamic", "1"), ("dynamic", "8"),
                                                             ("continuous", "1"), ("continuous", "8")]
    assert all(float(r["vs_generate_one_at_a_time"]) > 0 and float(r["vs_static_batch"]) > 0 for r in rows)
