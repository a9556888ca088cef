"""engine.tuning and ``deepseek-engine tune`` against real workers: a 2 x 2 sweep from the command
line, a refused grid value, the worker killed mid-sweep, the configuration restored after a
cancel; the Pareto front, the recommendation and the memory solvers on their own."""

from __future__ import annotations

import json
import tomllib

import pytest

from engine import tuning
from engine.cli import main
from helpers import EngineServer

GRID = '"batching.max_batch_size" = [1, 4]\n"batching.max_wait_ms" = [0, 50]\n'
TINY = tuning.Workload(prompt_tokens=12, output_tokens=4, concurrency=[1, 2], requests=2)


def test_cli_sweeps_a_2x2_grid_and_prints_the_recommended_settings_as_toml(server, tmp_path, capsys, app_data):
    before = server.runtime_config()
    (tmp_path / "grid.toml").write_text(GRID)
    code = main(["tune", "--url", server.url, "--api-key", server.api_key, "--grid", str(tmp_path / "grid.toml"),
                 "--concurrency", "1,2", "--requests", "2", "--prompt-tokens", "12", "--output-tokens", "4",
                 "--max-e2e-p99-ms", "60000", "--json", str(tmp_path / "sweep.json"), "--csv", str(tmp_path / "s.csv")])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert len(record["points"]) == (1 + 4) * 2
    assert {"model_fingerprint", "hardware", "versions", "workload", "grid", "objective"} <= set(record)
    for point in record["points"]:
        assert set(point) >= {"config", "concurrency", "output_tokens_per_s", "ttft_s", "itl_s", "e2e_s", "errors",
                              "pareto", "meets_slo", "refused"}
        assert set(point["e2e_s"]) == {"p50", "p90", "p99"} and point["refused"] is None
        assert point["output_tokens_per_s"] > 0 and point["ok"] == 2
    assert [p["config"] for p in record["points"] if not p["reference"]][::2] == [
        {"batching.max_batch_size": 1, "batching.max_wait_ms": 0}, {"batching.max_batch_size": 1, "batching.max_wait_ms": 50},
        {"batching.max_batch_size": 4, "batching.max_wait_ms": 0}, {"batching.max_batch_size": 4, "batching.max_wait_ms": 50}]
    reference = record["points"][0]
    assert reference["reference"] and reference["config"] == {
        "batching.max_batch_size": before["batching"]["max_batch_size"],
        "batching.max_wait_ms": before["batching"]["max_wait_ms"]}
    assert record["reference"]["reference"] and record["recommended"]["meets_slo"]
    # pareto as the record defines it: no other point has both more tokens/s and a lower p99 E2E
    for p in record["points"]:
        dominated = any(q["output_tokens_per_s"] > p["output_tokens_per_s"] and q["e2e_s"]["p99"] < p["e2e_s"]["p99"]
                        for q in record["points"])
        assert p["pareto"] == (not dominated)
    # the table marks the front; the last lines of stdout are the recommended settings as TOML
    lines = out.out.rstrip().splitlines()
    assert sum(1 for line in lines if line[1:2] == "*") == sum(p["pareto"] for p in record["points"])
    toml_start = next(i for i, line in enumerate(lines) if line.startswith("# recommended"))
    settings = tomllib.loads("\n".join(lines[toml_start:]))
    assert settings["batching"] == {k.partition(".")[2]: v for k, v in record["recommended"]["config"].items()}
    assert "point 10/10" in out.err  # the progress on stderr
    assert (tmp_path / "s.csv").read_text().count("\n") == 11
    assert len(tuning.list_records()) == 1  # kept in the data folder too
    assert server.runtime_config() == before


def test_a_refused_value_is_marked_with_the_engines_message_and_the_sweep_goes_on(server):
    before = server.runtime_config()
    grid = {"batching.max_batch_size": [0, 2]}
    record = tuning.Sweep(server.url, server.api_key, grid, TINY, tuning.Objective()).run()
    assert record.status == "finished" and record.restored is True
    refused = [p for p in record.points if p.refused]
    assert [p.config for p in refused] == [{"batching.max_batch_size": 0}] * 2
    assert "batching.max_batch_size = 0" in refused[0].refused and "greater than or equal to 1" in refused[0].refused
    assert not any(p.pareto or p.meets_slo for p in refused)
    measured = [p for p in record.points if p.config == {"batching.max_batch_size": 2}]
    assert len(measured) == 2 and all(p.measured for p in measured)
    assert server.runtime_config() == before


def test_config_found_is_restored_after_a_cancel(server):
    before = server.runtime_config()
    sweep = None
    seen = []

    def on_event(event):
        if event["type"] == "progress" and event["point"] == 3:  # the first grid point is being measured
            seen.append(server.runtime_config()["batching"]["max_batch_size"])
            sweep.cancel()

    sweep = tuning.Sweep(server.url, server.api_key, {"batching.max_batch_size": [3, 5]},
                         tuning.Workload(prompt_tokens=12, output_tokens=64, concurrency=[1, 2], requests=2),
                         tuning.Objective(), on_event=on_event)
    record = sweep.run()
    assert seen and seen[0] == 3
    assert record.status == "cancelled" and record.restored is True
    assert len(record.points) == 2 and all(p.reference for p in record.points)  # the level cut short is not kept
    assert server.runtime_config() == before


def test_worker_killed_mid_sweep_stops_the_sweep_and_keeps_the_points_done(llama_dir, tmp_path):
    with EngineServer(llama_dir) as srv:
        def on_event(event):
            if event["type"] == "point" and event["point"]["index"] == 2:  # mid-way through a grid step
                srv.proc.kill()
                srv.proc.wait()

        sweep = tuning.Sweep(srv.url, srv.api_key, {"batching.max_batch_size": [1, 2]}, TINY, tuning.Objective(),
                             on_event=on_event)
        record = sweep.run()
    assert record.status == "stopped"
    assert "stopped answering" in record.stopped_reason
    assert [p.measured for p in record.points[:3]] == [True, True, True]
    assert record.points[3:4] == [] or record.points[3].errors.get("connection")  # the level it died in
    assert record.restored is False and "could not be restored" in record.restore_error
    path = tuning.keep(record, tmp_path)
    again = tuning.SweepRecord.read(path)
    assert again.status == "stopped" and again.stopped_reason == record.stopped_reason
    assert len(again.points) == len(record.points)


def test_a_grid_against_a_server_without_admin_api_is_refused_before_measuring(server):
    bad_key = tuning.Sweep(server.url, "not-the-key", {"batching.max_batch_size": [1]}, TINY, tuning.Objective())
    with pytest.raises(tuning.SweepError):
        bad_key.run()


# ---------------------------------------------------------------------------- without a server

def point(index, tps, e2e, ttft=0.1, concurrency=1, reference=False, errors=None, refused=None):
    p = tuning.Point(index=index, config={"batching.max_batch_size": index}, concurrency=concurrency,
                     reference=reference, refused=refused, requests=4, ok=0 if refused else 4)
    if not refused:
        p.output_tokens_per_s = tps
        p.e2e_s = {"p50": e2e / 2, "p90": e2e, "p99": e2e}
        p.ttft_s = {"p50": ttft / 2, "p90": ttft, "p99": ttft}
        p.errors = errors or {}
    return p


def test_pareto_front_slo_and_recommendation():
    points = [point(0, 10, 1.0, reference=True), point(1, 20, 2.0), point(2, 15, 3.0), point(3, 30, 5.0, ttft=2),
              point(4, 40, 4.0, errors={"500": 1}), point(5, 0, 0, refused="no")]
    assert tuning.pareto_flags(points) == [True, True, False, False, True, False]
    assert [p.index for p in tuning.front(points)] == [0, 1, 4]
    objective = tuning.Objective(max_e2e_p99_s=4.5)
    best, why, gain = tuning.judge(points, objective)
    # 4 has errors, 3 is over the limit: 1 is the best within it, 2x the reference
    assert best.index == 1 and gain == pytest.approx(2.0) and "2.00x" in why
    assert [p.meets_slo for p in points] == [True, True, True, False, False, False]
    assert points[1].ratio == pytest.approx(2.0)
    latency = tuning.Objective(goal="latency", min_tokens_per_s=12)
    best, why, gain = tuning.judge(points, latency)
    assert best.index == 1 and gain == pytest.approx(0.5) and "lowest p99 E2E" in why
    best, why, _ = tuning.judge(points, tuning.Objective(max_e2e_p99_s=0.1))
    assert best is None and "no point meets" in why


def test_grid_files_are_checked():
    assert tuning.parse_grid(GRID) == {"batching.max_batch_size": [1, 4], "batching.max_wait_ms": [0, 50]}
    assert tuning.parse_grid("[cache]\nmemory_mb = [0, 512]") == {"cache.memory_mb": [0, 512]}
    for text, words in (('"batching.max_batch" = [1]', "not a run-time setting"),
                        ('"model.dtype" = ["float32"]', "not a run-time setting"),
                        ('"batching.max_batch_size" = 4', "non-empty list"), ("x = [", "not valid TOML")):
        with pytest.raises(tuning.GridError, match=words):
            tuning.parse_grid(text)
    assert tuning.count_points({"batching.max_batch_size": [1, 2, 4], "cache.memory_mb": [0, 1]}, 3) == 21
    # A workload-only sweep (no grid: vLLM has no PUT /admin/config) measures the reference alone.
    assert tuning.expand_grid({}) == [] and tuning.count_points({}, 2) == 2


def test_memory_solvers_invert_the_estimate(llama_dir):
    from engine.catalog import inspect_path
    from engine.memory import max_batch, max_context, run_bytes

    entry = inspect_path(llama_dir)
    budget = run_bytes(entry, 5, 256) + 1
    assert max_batch(entry, 256, budget) == 5
    assert run_bytes(entry, 6, 256) > budget
    longest = max_context(entry, 5, budget, limit=100_000)
    assert longest >= 256 and run_bytes(entry, 5, longest) <= budget < run_bytes(entry, 5, longest + 1)
    assert max_context(entry, 1, budget) == entry.context_length  # the model's own limit
    assert max_batch(entry, 256, 10) == 0
