"""Engine → Compare endpoints…: the app's engine and another URL under one workload, one table,
one chart per figure, the run saved as a record (real engines: the session's server and a
continuous-batching one shared with test_batching)."""

import json

from PySide6.QtWidgets import QTableWidgetItem


def test_compare_runs_the_engine_and_another_url_side_by_side(make_window, qtbot, server, worker_pool, llama_dir):
    other = worker_pool.get(llama_dir, "--batching-mode", "continuous", "--max-wait-ms", "300")
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.engine_session.client is not None, timeout=10_000)
    dialog = window.show_compare()
    assert dialog.endpoint_rows() == [{"url": server.url, "api_key": server.api_key, "label": "attached"}]
    last = dialog.endpoints.rowCount() - 1  # the empty row for another URL
    for column, text in enumerate((other.url, other.api_key, "continuous")):
        dialog.endpoints.setItem(last, column, QTableWidgetItem(text))
    dialog.levels.setText("1,2")
    dialog.requests.setValue(2)
    dialog.prompt_tokens.setValue(16)
    dialog.output_tokens.setValue(4)
    dialog.run_button.click()
    assert not dialog.run_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.run.record is not None, timeout=120_000)
    cells = [[dialog.results.item(r, c).text() for c in range(3)] for r in range(dialog.results.rowCount())]
    assert cells == [["attached", "1", "2/2"], ["continuous", "1", "2/2"], ["attached", "2", "2/2"],
                     ["continuous", "2", "2/2"]]
    assert len(dialog.speed_plot.getPlotItem().listDataItems()) == 2  # a line per endpoint
    saved = json.loads(dialog.run.saved_to.read_text())
    assert saved["kind"] == "bench-comparison" and [e["name"] for e in saved["endpoints"]] == ["attached", "continuous"]
    assert str(dialog.run.saved_to) in dialog.status.text() and dialog.run_button.isEnabled()
    dialog.close()


def test_compare_says_when_an_endpoint_cannot_be_reached(make_window, qtbot):
    window = make_window(engine=False)
    dialog = window.show_compare()
    dialog.endpoints.setItem(0, 0, QTableWidgetItem("http://127.0.0.1:9"))
    dialog.requests.setValue(1)
    dialog.run_button.click()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("failed:"), timeout=30_000)
    assert "cannot reach a model at http://127.0.0.1:9" in dialog.status.text() and dialog.run_button.isEnabled()
    dialog.close()
