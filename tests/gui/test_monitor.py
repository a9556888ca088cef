"""The Monitor panel plots live telemetry of a real worker (no GPU here: its plots say N/A)."""

import httpx
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
        for plot in panel.plots.values():  # the data is in view on every (linked) plot, N/A ones included
            left, right = plot.getViewBox().viewRange()[0]
            assert left <= xs[0] + 1 and right >= xs[-1] - 1
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
        qtbot.waitUntil(lambda: "N/A" not in panel.plots["Batch size (mean per step)"].getPlotItem().titleLabel.text,
                        timeout=5_000)
        panel.window_box.setCurrentText("1 min")
        panel.pause_box.setChecked(True)
        frozen = len(panel.curves["CPU (%)"][0].getData()[0])
        before = len(model.buffer.get("cpu_pct")[0])
        qtbot.waitUntil(lambda: len(model.buffer.get("cpu_pct")[0]) > before, timeout=5_000)
        assert len(panel.curves["CPU (%)"][0].getData()[0]) == frozen, "paused plots must not move"
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
