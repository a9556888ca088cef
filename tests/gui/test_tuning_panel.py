"""The Tuning panel against a real worker: the memory budget redrawn as a knob is edited, the
engine's refusal beside its field, an over-budget setting held back, a 2 x 2 sweep drawn (points,
Pareto front, recommendation, table), a point applied and read back from /admin/config, the run
kept and reopened, and the settings put back when the app quits mid-sweep."""

from __future__ import annotations

import httpx

from engine import tuning

GRID = '"batching.max_batch_size" = [1, 4]\n"batching.max_wait_ms" = [0, 50]\n'


def restore(server, config: dict) -> None:
    httpx.put(server.url + "/admin/config", headers=server.headers, json=config, timeout=10).raise_for_status()


def open_panel(make_window, qtbot, server):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.model_id is not None, timeout=30_000)
    window.show_panel("Tuning")
    panel = window.tuning
    qtbot.waitUntil(lambda: panel.model.engine.admin and bool(panel.model.budgets), timeout=30_000)
    return window, panel


def small_experiment(panel, output_tokens: int = 4) -> None:
    panel.grid_edit.setPlainText(GRID)
    panel.concurrency_edit.setText("1,2")
    panel.per_value.setValue(2)
    panel.prompt_box.setValue(12)
    panel.output_box.setValue(output_tokens)
    panel.max_e2e.setText("60000")


def test_budget_knobs_and_a_2x2_sweep(make_window, qtbot, server):
    before = server.runtime_config()
    window, panel = open_panel(make_window, qtbot, server)
    model = panel.model
    try:
        # -- the budget: one bar for the host (the model is on the CPU), weights measured
        budget = model.budgets[0]
        assert budget.device == "cpu" and budget.part("weights").measured and budget.part("weights").bytes > 0
        assert budget.verdict == "fits" and budget.max_batch >= before["batching"]["max_batch_size"]
        assert panel.bars[0][0].budget is budget and "Fits" in panel.bars[0][1].text()
        kv = budget.part("kv_cache").bytes
        size = panel.knobs["batching.max_batch_size"]
        size.editor.textEdited.emit(str(2 * before["batching"]["max_batch_size"]))  # as typed
        assert model.budgets[0].part("kv_cache").bytes == 2 * kv  # redrawn at once, nothing applied
        assert panel.bars[0][0].budget is model.budgets[0]
        assert size.in_force.text() == str(before["batching"]["max_batch_size"]) and panel.apply_button.isEnabled()
        # -- over budget: nothing is sent without a yes
        panel.knobs["cache.memory_mb"].editor.textEdited.emit(str(10**9))
        assert model.over_budget() and "Will not fit" in panel.bars[0][1].text()
        asked = []
        panel.confirm = lambda title, question: asked.append(title) or False
        panel.apply_button.click()
        assert asked == ["Over the memory budget"] and model.edits
        panel.revert_button.click()
        assert not model.edits and model.budgets[0].part("kv_cache").bytes == kv
        # -- the engine's refusal, word for word, beside the field
        size.editor.textEdited.emit("0")
        panel.apply_button.click()
        qtbot.waitUntil(lambda: size.refusal.isVisible(), timeout=10_000)
        assert size.refusal.text() == "batching.max_batch_size = 0: Input should be greater than or equal to 1"
        panel.revert_button.click()
        # -- a 2 x 2 sweep on two concurrency levels
        small_experiment(panel)
        with qtbot.waitSignal(model.sweep_finished, timeout=180_000) as finished:
            panel.run_button.click()
            assert panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
        record = finished.args[0]
        assert record.status == "finished" and record.restored is True and server.runtime_config() == before
        assert len(record.points) == 10 and all(p.measured for p in record.points)
        assert panel.sweep_plot.scatter.data.size == 10  # every point on the plot
        plotted = {int(spot.data()) for spot in panel.sweep_plot.scatter.points()}
        assert plotted == set(range(10))
        front = tuning.front(record.points, "e2e")
        xs, ys = panel.sweep_plot.front_line.getData()
        assert list(ys) == [p.output_tokens_per_s for p in front] and len(front) >= 1
        assert {p.index for p in front} == {p.index for p in record.points if p.pareto}
        best = record.recommended
        assert best is not None and list(panel.sweep_plot.best_marker.getData()[1]) == [best.output_tokens_per_s]
        assert "Recommended" in panel.recommendation.text()
        assert panel.table.rowCount() == 10 and panel.sweep_plot.limit_lines  # the E2E limit is drawn
        # -- the TTFT view draws the same points against TTFT
        panel.latency_box.setCurrentIndex(1)
        assert sorted(panel.sweep_plot.scatter.data["x"]) == sorted(p.p99("ttft") * 1000 for p in record.points)
        panel.latency_box.setCurrentIndex(0)
        # -- click a grid point: its figures; Apply puts it in force
        chosen = next(p for p in record.points if not p.reference and p.config != {
            f"batching.{k}": v for k, v in before["batching"].items() if k in ("max_batch_size", "max_wait_ms")})
        panel.select(chosen.index)
        assert f"#{chosen.index}" in panel.details.text() and panel.export_button.isEnabled()
        panel.apply_point_button.click()
        expected = {k.partition(".")[2]: v for k, v in chosen.config.items()}
        qtbot.waitUntil(lambda: all(server.runtime_config()["batching"][k] == v for k, v in expected.items()),
                        timeout=10_000)
        qtbot.waitUntil(lambda: model.in_force["batching.max_batch_size"] == expected["max_batch_size"],
                        timeout=10_000)
        # -- the run was kept; reopening it measures nothing
        qtbot.waitUntil(lambda: len(model.runs) == 1, timeout=10_000)
        with qtbot.waitSignal(model.record_changed, timeout=10_000):
            panel.open_button.click()
        assert model.record is not record and len(model.record.points) == 10
        with qtbot.waitSignal(model.record_changed, timeout=10_000):
            panel.overlay_button.click()
        assert model.overlay is not None and len(panel.sweep_plot.overlay_scatter.data) == 10
        # -- Export opens issue 12's dialog on the chosen point
        panel.select(chosen.index)
        panel.export_selected()
        dialog = panel._export_dialog
        assert dialog is not None and dialog.isVisible()
        dialog.reject()
    finally:
        restore(server, before)


def test_quitting_mid_sweep_puts_the_settings_back(make_window, qtbot, server):
    before = server.runtime_config()
    window, panel = open_panel(make_window, qtbot, server)
    try:
        small_experiment(panel, output_tokens=48)
        panel.run_button.click()
        # point 3 is the first grid point: the sweep has changed the engine's settings
        qtbot.waitUntil(lambda: (panel.model.last_progress or {}).get("point", 0) >= 3, timeout=120_000)
        assert server.runtime_config() != before
        window.close()
        assert server.runtime_config() == before
    finally:
        restore(server, before)
