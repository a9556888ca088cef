"""Telemetry: host and engine sources against a real worker; the NVML adapter against a stand-in
driver (no GPU exists on the test machines), ring buffers, alerts and the headless recorder."""

import csv
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from engine.telemetry.engine_metrics import EngineMetricsSource, parse, quantile
from engine.telemetry.gpu import GpuMemory, GpuSource, gpu_count, gpu_memory
from engine.telemetry.recorder import AlertWatch, Recorder, SeriesBuffer, csv_value
from helpers import ROOT


class NotSupported(Exception):
    pass


class StandInNvml:
    """A stand-in for pynvml with one GPU: some fields unsupported, one engine process."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
    NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1

    def __init__(self, engine_pid, init_error=None, devices=1):
        self.engine_pid, self.init_error, self.devices = engine_pid, init_error, devices

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shutdowns = getattr(self, "shutdowns", 0) + 1

    def nvmlDeviceGetCount(self):
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlSystemGetDriverVersion(self):
        return b"580.65"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetName(self, h):
        return "NVIDIA A100-SXM4-80GB"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}"

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=75 * 2**30, free=5 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 71

    def nvmlDeviceGetPowerUsage(self, h):
        raise NotSupported("power readings not supported")

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 400_000

    def nvmlDeviceGetClockInfo(self, h, clock):
        return 1410 if clock == self.NVML_CLOCK_SM else 1593

    def nvmlDeviceGetPcieThroughput(self, h, counter):
        raise NotSupported("not on this bus")

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0x20 | 0x04  # software thermal slowdown + software power cap

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=self.engine_pid, usedGpuMemory=60 * 2**30),
                SimpleNamespace(pid=4242, usedGpuMemory=None)]


def test_nvml_standin_unsupported_fields_are_na_never_zero():
    source = GpuSource(nvml=StandInNvml(engine_pid=1234))
    assert source.available and source.driver == "580.65" and source.cuda == "13.0"
    [gpu] = source.snapshot(frozenset({1234}))
    assert gpu.name == "NVIDIA A100-SXM4-80GB" and gpu.gpu_util_pct == 87.0
    assert gpu.power_w is None and gpu.pcie_tx_kbps is None and gpu.pcie_rx_kbps is None
    assert gpu.power_limit_w == 400.0 and gpu.temperature_c == 71
    assert gpu.throttle == ["software power cap", "software thermal slowdown"]
    assert [p.is_engine for p in gpu.processes] == [True, False]
    assert gpu.engine_bytes() == 60 * 2**30
    row = Recorder(gpu=source, worker_pid=1234).sample()
    assert row["gpu0_power_w"] is None and csv_value(row["gpu0_power_w"]) == "N/A"
    assert row["gpu0_processes"] == "1234 (engine) 60.0 GiB; 4242 N/A"


def test_nvml_standin_missing_driver_says_so():
    source = GpuSource(nvml=StandInNvml(1, init_error=RuntimeError("NVML Shared Library Not Found")))
    assert not source.available and "no NVIDIA driver" in source.reason and source.snapshot() == []


def test_one_shot_readings_close_nvml_and_read_na_without_a_driver():
    nvml = StandInNvml(1, devices=2)
    assert gpu_count(nvml) == 2
    assert gpu_memory(0, nvml) == GpuMemory(0, 80 * 2**30, 5 * 2**30)
    assert nvml.shutdowns == 2  # every short reading shuts down the NVML it opened
    broken = StandInNvml(1, init_error=RuntimeError("Driver Not Loaded"))
    assert gpu_count(broken) == 0
    assert gpu_memory(0, broken) == GpuMemory(0, None, None)  # N/A, never 0


def test_real_nvml_on_this_machine_reports_what_it_finds():
    source = GpuSource()
    if source.available:
        assert source.snapshot() and source.snapshot()[0].mem_total_bytes > 0
    else:
        assert source.reason and source.snapshot() == []


def test_host_and_engine_sources_against_a_real_worker(server):
    recorder = Recorder(server.url, server.api_key, worker_pid=server.proc.pid)
    first = recorder.sample()
    for _ in range(3):
        httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=60,
                   json={"model": "tiny-llama", "prompt": "Hello", "max_tokens": 8, "ignore_eos": True})
    time.sleep(0.1)
    second = recorder.sample()
    assert second["worker_rss_bytes"] > 50e6 and second["worker_cpu_pct"] is not None
    assert 0 <= second["cpu_pct"] <= 100 and second["ram_total_bytes"] > second["ram_used_bytes"] > 0
    assert second["engine_generation_tokens_per_s"] > 0 and second["engine_prompt_tokens_per_s"] > 0
    assert second["engine_requests_running"] == 0 and second["engine_requests_waiting"] == 0
    assert second["engine_ttft_p50_s"] is not None and second["engine_ttft_p50_s"] <= second["engine_ttft_p99_s"]
    assert first["engine_generation_tokens_per_s"] is None  # no rate from a single scrape: N/A, not 0


def test_engine_source_reads_vllm_metric_names():
    """A stand-in for a vLLM server's /metrics text (no vLLM here), with its real metric names."""
    text = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.42
"""
    source = EngineMetricsSource("http://unused")
    samples = parse(text)
    from engine.telemetry.engine_metrics import _value

    assert _value(samples, "engine_requests_running") == 3.0
    assert _value(samples, "engine_kv_cache_usage") == 0.42


def test_quantile_over_the_interval_between_scrapes():
    before = [(0.01, 10), (0.1, 10), (1.0, 10), (float("inf"), 10)]
    now = [(0.01, 10), (0.1, 100), (1.0, 110), (float("inf"), 110)]
    assert quantile(now, before, 0.5) == 0.1 and quantile(now, before, 0.99) == 1.0
    assert quantile(before, before, 0.5) is None


def test_ring_buffer_keeps_order_and_an_hour_stays_small():
    buffer = SeriesBuffer(capacity=5)
    for i in range(8):
        buffer.append({"time": float(i), "x": i if i != 6 else None})
    times, values = buffer.get("x")
    assert list(times) == [3, 4, 5, 6, 7] and np.isnan(values[3]) and list(values[[0, 1, 2, 4]]) == [3, 4, 5, 7]
    assert list(buffer.get("x", window_s=2)[0]) == [5, 6, 7]
    hour = SeriesBuffer(capacity=3600)
    row = {"time": 0.0, **{f"s{i}": 1.0 for i in range(80)}}
    for t in range(3600):
        row["time"] = float(t)
        hour.append(row)
    assert hour.nbytes < 20 * 2**20


def test_alerts_vram_throttle_and_growing_worker_memory():
    watch, buffer = AlertWatch(vram_threshold=0.9, growth_window_s=60, growth_ratio=1.2), SeriesBuffer()
    started = []
    for t in range(70):
        row = {"time": float(t), "worker_rss_bytes": 1e9 * (1 + t / 100), "gpu0_mem_used_bytes": 75 if t > 5 else 10,
               "gpu0_mem_total_bytes": 80, "gpu0_throttle": "hardware thermal slowdown" if t > 30 else "none"}
        buffer.append(row)
        started += watch.update(row, buffer)
    kinds = {a.kind: a.since for a in started}
    assert kinds["gpu0-vram"] == 6.0 and kinds["gpu0-throttle"] == 31.0 and "worker-memory" in kinds
    assert set(watch.active) == {"gpu0-vram", "gpu0-throttle", "worker-memory"}
    higher = AlertWatch(vram_threshold=0.95)  # 75 of 80 is 93.75%: under it
    assert not higher.update({"time": 0.0, "gpu0_mem_used_bytes": 75, "gpu0_mem_total_bytes": 80}, SeriesBuffer())


def test_monitor_cli_writes_one_row_per_sample_with_header(server, tmp_path):
    out = tmp_path / "telemetry.csv"
    result = subprocess.run([sys.executable, "-m", "engine", "monitor", "--url", server.url, "--api-key",
                             server.api_key, "--worker-pid", str(server.proc.pid), "--interval", "0.5",
                             "--duration", "2.2", "--csv", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert 4 <= len(rows) <= 6
    assert float(rows[-1]["worker_rss_bytes"]) > 0 and rows[-1]["engine_requests_running"] == "0"
    # where the served model's memory went: its weights on the CPU, no request holding KV now
    assert rows[-1]["engine_model_device"] == "cpu" and float(rows[-1]["engine_weights_bytes"]) > 0.1e6
    assert float(rows[-1]["engine_kv_cache_bytes"]) == 0
    if "GPU columns are N/A" in result.stderr:
        assert rows[-1]["gpu0_mem_used_bytes"] == "N/A" and rows[-1]["gpu0_processes"] == "N/A"
    bad = subprocess.run([sys.executable, "-m", "engine", "monitor", "--interval", "0.1", "--csv", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "between 0.5 and 5" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "engine", "monitor", "--vram-alert", "0", "--csv", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--vram-alert must be a percent" in bad.stderr
