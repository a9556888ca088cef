"""The Monitor panel plots live telemetry of a real worker (no GPU here: its plots say N/A)."""

import httpx
import pytest
import numpy as np

from deepseek_desktop.panels.monitor import MonitorPanel
from deepseek_desktop.telemetry import TelemetryModel


def test_monitor_panel_plots_live_telemetry_of_a_real_worker(qtbot, server, tmp_path):
    model = TelemetryModel(interval_s=0.5)
    panel = MonitorPanel(model)
    qtbot.addWidget(panel)
    panel.show()  # a hidden panel does not redraw
    model.attach(server.url, server.api_key, server.proc.pid)
    model.start()
    try:
        httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=60,
                   json={"model": "tiny-llama", "prompt": "Hello", "max_tokens": 8})
        qtbot.waitUntil(lambda: len(model.buffer.get("cpu_pct")[0]) >= 4, timeout=20_000)
        times, rss = model.buffer.get("worker_rss_bytes")
        assert rss[-1] > 50e6
        xs, ys = panel.curves["RAM (GiB)"][1].getData()
        assert len(xs) >= 4 and ys[-1] > 0.04
        assert xs[-1] == 0 and xs[0] < 0  # seconds before the newest sample
        for plot in panel.plots.values():  # the data is in view on every (linked) plot, N/A ones included
            left, right = plot.getViewBox().viewRange()[0]
            assert left <= xs[0] + 1 and right >= xs[-1] - 1 and right - left <= 300 * 1.01
        # The model is on the CPU: its weights/KV split is drawn in the RAM plot, not the VRAM one.
        qtbot.waitUntil(lambda: panel.curves["RAM (GiB)"][2].getData()[0] is not None
                        and len(panel.curves["RAM (GiB)"][2].getData()[0]) > 0, timeout=5_000)
        weights = panel.curves["RAM (GiB)"][2].getData()[1][-1] * 2**30
        assert weights == model.last_row["engine_weights_bytes"] and 0.1e6 < weights < 50e6
        assert "weights" in panel.title_text("RAM (GiB)") and "weights" not in panel.title_text("VRAM (GiB)")
        low, high = panel.plots["RAM (GiB)"].getViewBox().viewRange()[1]
        host = panel.curves["RAM (GiB)"][0].getData()[1].max()
        assert low < 0 and host < high < 2.5 * host * 1.03  # a round top (1, 2 or 5 x 10^k) above the data
        if model.gpu_count == 0:
            assert "No NVIDIA GPU telemetry" in panel.gpu_label.text()
            assert np.isnan(panel.visible()["gpu0_gpu_util_pct"][1]).all()  # N/A, never 0
            xs, _ = panel.curves["GPU utilization (%)"][0].getData()
            assert xs is None or len(xs) == 0  # an N/A curve draws nothing (not a line at 0)
        # A request between two samples shows up as a batch size (1: it ran alone).
        assert panel.plots["Batch size (mean per step)"].isHidden()
        panel.detail_box.setChecked(True)
        httpx.post(server.url + "/v1/completions", headers=server.headers, timeout=60,
                   json={"model": "tiny-llama", "prompt": "Hello again", "max_tokens": 8})
        qtbot.waitUntil(lambda: np.isfinite(model.buffer.get("engine_batch_size_mean")[1]).any(), timeout=10_000)
        sizes = model.buffer.get("engine_batch_size_mean")[1]
        assert np.nanmax(sizes) >= 1
        qtbot.waitUntil(lambda: "N/A" not in panel.title_text("Batch size (mean per step)"), timeout=5_000)
        panel.window_box.setCurrentText("1 min")
        panel.pause_box.setChecked(True)
        frozen = len(panel.curves["CPU (% of all cores)"][0].getData()[0])
        before = len(model.buffer.get("cpu_pct")[0])
        qtbot.waitUntil(lambda: len(model.buffer.get("cpu_pct")[0]) > before, timeout=5_000)
        assert len(panel.curves["CPU (% of all cores)"][0].getData()[0]) == frozen, "paused plots must not move"
        panel.export_csv(tmp_path / "t.csv")
        header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
        assert header[0] == "time" and "engine_generation_tokens_per_s" in header
        pngs = panel.export_pngs(tmp_path)
        assert len(pngs) == 10 and all(p.stat().st_size > 1000 for p in pngs)
    finally:
        model.stop()


def test_alerts_reach_the_status_bar_and_the_logs_panel(make_window, qtbot):
    window = make_window(engine=False)
    window.telemetry.alert.emit("VRAM above 90% on GPU 0", 1_700_000_000.0)
    rows = window.logs.rows()
    assert rows[-1][0] == "alert" and "VRAM above 90%" in rows[-1][2] and "since" in rows[-1][2]
    assert "VRAM above 90%" in window.statusBar().currentMessage()


def points(curve) -> int:
    """Samples a curve was given (pyqtgraph keeps None for an emptied curve)."""
    return 0 if curve.xData is None else len(curve.xData)


def test_round_tops_and_time_labels():
    from deepseek_desktop.widgets.telemetry_plots import ago_label, round_top

    assert [round_top(v) for v in (0, float("nan"), 0.3, 1, 1.01, 3, 7.2, 140)] == [1, 1, 0.5, 1, 2, 5, 10, 200]
    assert [ago_label(v) for v in (0, -45, -60, -150, -3600)] == ["now", "-45 s", "-1 min", "-2:30", "-60 min"]


def test_vram_split_on_the_gpu_holding_the_model_with_stand_in_gpu_rows(qtbot):
    """No GPU here: two GPUs' rows are a stand-in (the NVML side is tested in test_telemetry);
    the engine says its model is on cuda:1."""
    model = TelemetryModel()
    panel = MonitorPanel(model)
    qtbot.addWidget(panel)
    panel.show()
    gib = 2**30
    for t in range(5):
        row = {"time": 1000.0 + t, "ram_used_bytes": 8 * gib, "ram_total_bytes": 32 * gib, "cpu_pct": 5.0,
               "engine_model_device": "cuda:1", "engine_weights_bytes": 14 * gib, "engine_kv_cache_bytes": 2 * gib,
               "engine_prefix_cache_ram_bytes": 0.5 * gib}
        for g in (0, 1):
            row.update({f"gpu{g}_name": "H200", f"gpu{g}_mem_used_bytes": (3 + 14 * g) * gib,
                        f"gpu{g}_mem_total_bytes": 140 * gib, f"gpu{g}_gpu_util_pct": 50.0,
                        f"gpu{g}_sm_clock_mhz": 1980, f"gpu{g}_pcie_tx_kbps": None, f"gpu{g}_throttle": "none",
                        f"gpu{g}_processes": "4321 (engine) 17.0 GiB" if g else "none"})
        model.gpu_count, model.gpu_driver, model.gpu_cuda = 2, "580.65", "13.0"
        model._on_row(row)
    assert panel.gpu_box.count() == 2
    weights = panel.curves["VRAM (GiB)"][2]
    assert weights.getData()[0] is None or len(weights.getData()[0]) == 0  # GPU 0 shown: not the model's
    panel.gpu_box.setCurrentIndex(1)
    assert list(weights.getData()[1]) == [14.0] * 5
    details = panel.gpu_details.text()
    assert "H200 · driver 580.65, CUDA 13.0 · SM 1980 MHz" in details and "PCIe TX N/A" in details
    assert "processes: 4321 (engine) 17.0 GiB" in details and not panel.gpu_details.isHidden()
    assert panel.curves["VRAM (GiB)"][3].getData()[1][-1] == 2.0
    assert "weights" in panel.title_text("VRAM (GiB)") and "weights" not in panel.title_text("RAM (GiB)")
    low, high = panel.plots["VRAM (GiB)"].getViewBox().viewRange()[1]
    assert high == pytest.approx(140 * 1.03, rel=0.01)  # the device's total is the top
    ram_weights = panel.curves["RAM (GiB)"][2].getData()[0]
    assert ram_weights is None or len(ram_weights) == 0
    # Under CUDA_VISIBLE_DEVICES=1 the engine's cuda:0 is NVML's GPU 1: the GPU whose process
    # list holds the engine decides, not the index.
    for t in range(5, 7):
        model._on_row({**row, "time": 1000.0 + t, "engine_model_device": "cuda:0",
                       "gpu0_engine_mem_bytes": 0, "gpu1_engine_mem_bytes": 17 * gib})
    assert points(weights) == 7  # still on GPU 1's plot
    panel.gpu_box.setCurrentIndex(0)
    assert points(weights) == 0


def test_plots_follow_the_app_theme(make_window):
    window = make_window(engine=False)
    window.set_theme("light")
    plot = window.monitor.plots["CPU (% of all cores)"]
    assert plot.backgroundBrush().color().name() == "#ffffff"
    assert "#505050" in plot.getPlotItem().titleLabel.item.toHtml()  # the title is set again in the new colour
    window.set_theme("dark")
    assert plot.backgroundBrush().color().name() == "#000000"


def test_wide_windows_redraw_once_per_pixel_of_time_not_every_sample(qtbot):
    model = TelemetryModel()
    panel = MonitorPanel(model)
    qtbot.addWidget(panel)
    panel.show()
    panel.window_box.setCurrentText("60 min")
    drawn = []
    for t in range(13):
        model._on_row({"time": 5000.0 + t, "ram_used_bytes": 2**30, "cpu_pct": 1.0})
        drawn.append(len(panel.curves["CPU (% of all cores)"][0].xData))  # the data set, before clipping to view
    assert drawn == [1] * 6 + [7] * 6 + [13]  # every 6 s at 60 min
    panel.window_box.setCurrentText("1 min")  # a change of window draws at once, then every sample
    model._on_row({"time": 5013.0, "ram_used_bytes": 2**30, "cpu_pct": 1.0})
    assert len(panel.curves["CPU (% of all cores)"][0].xData) == 14


def test_an_export_to_a_place_that_cannot_be_written_says_so(make_window, tmp_path):
    window = make_window(engine=False)
    monitor = window.monitor
    assert not monitor.export("CSV", tmp_path / "no-such-folder" / "t.csv")
    assert not monitor.export("PNG", tmp_path / "no-such-folder")
    errors = [r[2] for r in window.logs.rows() if r[1] == "error"]
    assert any("CSV" in e and "no-such-folder" in e and "failed" in e for e in errors)
    assert any("PNG" in e and "could not write" in e for e in errors)
    assert monitor.export("CSV", tmp_path / "t.csv") and (tmp_path / "t.csv").read_text().startswith("time,")


def test_status_bar_memory_counts_the_engine_on_every_gpu_with_stand_in_gpu_rows(make_window):
    window = make_window(engine=False)
    gib = 2**30
    row = {"time": 1.0, "worker_rss_bytes": 2 * gib, "gpu0_engine_mem_bytes": 0, "gpu1_engine_mem_bytes": 17 * gib}
    window.telemetry.row_added.emit(row)
    assert window.statusBar().memory_label.text() == "VRAM 17.00 GiB"  # the model is on GPU 1, not GPU 0
    window.telemetry.row_added.emit({**row, "gpu1_engine_mem_bytes": 0, "gpu0_engine_mem_bytes": None})
    assert window.statusBar().memory_label.text() == "RAM 2.00 GiB"  # no GPU memory held: the worker's RSS


def test_without_a_gpu_the_gpu_plots_fold_into_one_line_and_the_csv_reads_well(qtbot, tmp_path):
    model = TelemetryModel()
    panel = MonitorPanel(model)
    qtbot.addWidget(panel)
    panel.resize(1070, 700)
    panel.show()
    model.gpu_count, model.gpu_reason = 0, "no NVIDIA driver"
    gib = 2**30
    for t in range(3):
        model._on_row({"time": 1_700_000_000.0 + t, "ram_used_bytes": 1.0739814e9 + t, "ram_total_bytes": 32 * gib,
                       "cpu_pct": 5.0, "engine_ttft_p50_s": 0.1, "engine_ttft_p99_s": 0.1})
    gpu_plots = ("GPU utilization (%)", "VRAM (GiB)", "Temperature (°C) and power (W)")
    assert all(panel.plots[title].isHidden() for title in gpu_plots)
    assert "No NVIDIA GPU telemetry (no NVIDIA driver)" in panel.gpu_label.text()
    assert not panel.gpu_box.isEnabled() and not panel.vram_alert_box.isEnabled()
    shown = [t for t, p in panel.plots.items() if not p.isHidden()]
    assert [panel.grid.getItemPosition(panel.grid.indexOf(panel.plots[t]))[:2] for t in shown] == \
        [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]  # no gaps where the GPU plots were
    p50, p99 = panel.curves["Time to first token (ms)"]
    assert p50.zValue() > p99.zValue() and p50.opts["symbolSize"] < p99.opts["symbolSize"]  # p50 on top

    assert panel.export("CSV", tmp_path / "t.csv")
    assert panel.readout.text() == f"exported 1 file(s) to {tmp_path / 't.csv'}"  # said on screen
    header, first = (tmp_path / "t.csv").read_text().splitlines()[:2]
    columns = dict(zip(header.split(","), first.split(",")))
    assert columns["time"] == "1700000000.000" and columns["time_iso"].startswith("2023-11-")
    assert columns["ram_used_bytes"] == "1073981400" and columns["ram_total_bytes"] == str(32 * gib)
    panel.window_box.setCurrentText("1 min")
    assert panel.readout.text() == ""  # a read-out of another window is not left standing
