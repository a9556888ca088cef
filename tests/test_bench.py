"""deepseek-engine bench against the real server: every figure present, CSV and JSON written."""

import csv
import json
import subprocess
import sys

from helpers import ROOT


def test_bench_reports_each_level(server, tmp_path):
    out_json, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--url", server.url, "--api-key", server.api_key,
         "--concurrency", "1,3", "--requests", "6", "--prompt-tokens", "20", "--output-tokens", "8",
         "--json", str(out_json), "--csv", str(out_csv)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6/6" in result.stderr  # the progress bar
    data = json.loads(out_json.read_text())
    assert data["model"] == "tiny-llama"
    levels = {level["concurrency"]: level for level in data["levels"]}
    assert set(levels) == {1, 3}
    for level in levels.values():
        assert level["ok"] == level["requests"] == 6 and level["errors"] == {}
        assert level["output_tokens_per_s"] > 0 and level["request_throughput"] > 0
        assert level["prompt_tokens_mean"] > 10
        for name in ("ttft_s", "itl_s", "e2e_s"):
            values = level[name]
            assert values["p50"] <= values["p90"] <= values["p99"]
    rows = list(csv.DictReader(out_csv.open()))
    assert [int(r["concurrency"]) for r in rows] == [1, 3] and "ttft_p99_s" in rows[0]


def test_bench_counts_errors_by_status(server):
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--url", server.url, "--api-key", server.api_key,
         "--model", "tiny-llama", "--concurrency", "2", "--requests", "2", "--prompt-tokens", "300",
         "--output-tokens", "8"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1  # every request over the 256-token context: 400s, counted
    assert "'400': 2" in result.stdout


def test_bench_without_a_server_says_so():
    result = subprocess.run([sys.executable, "-m", "engine", "bench", "--url", "http://127.0.0.1:9"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot reach a model at http://127.0.0.1:9" in result.stderr


def test_bench_compares_two_urls_in_one_table_chart_and_record(server, worker_pool, llama_dir, tmp_path):
    """The same workload on two engines (the session's server, and a continuous-batching one
    shared with test_batching): interleaved levels, one table, an SVG chart, one JSON record."""
    other = worker_pool.get(llama_dir, "--batching-mode", "continuous", "--max-wait-ms", "300")
    record_file, chart, rows_file = tmp_path / "cmp.json", tmp_path / "cmp.svg", tmp_path / "cmp.csv"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--url", server.url, "--url", other.url,
         "--api-key", server.api_key, "--label", "default", "--label", "continuous", "--concurrency", "1,4",
         "--requests", "4", "--prompt-tokens", "20", "--output-tokens", "6", "--json", str(record_file),
         "--chart", str(chart), "--csv", str(rows_file)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = result.stdout.splitlines()
    assert table[1].startswith("endpoint") and "vs first" in table[1]
    body = [line.split() for line in table[2:]]
    assert [(r[0], r[1], r[2]) for r in body] == [("default", "1", "4/4"), ("continuous", "1", "4/4"),
                                                 ("default", "4", "4/4"), ("continuous", "4", "4/4")]
    assert body[0][4] == "1.00x"  # ratios are to the first endpoint
    record = json.loads(record_file.read_text())
    assert record["kind"] == "bench-comparison" and record["workload"]["concurrency"] == [1, 4]
    assert [(e["name"], e["url"], e["model"]) for e in record["endpoints"]] == [
        ("default", server.url, "tiny-llama"), ("continuous", other.url, "tiny-llama")]
    for endpoint in record["endpoints"]:
        assert [lv["concurrency"] for lv in endpoint["levels"]] == [1, 4]
        assert all(lv["ok"] == 4 and lv["output_tokens_per_s"] > 0 and lv["ttft_s"]["p99"] > 0 for lv in endpoint["levels"])
    svg = chart.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4 and "p99 TTFT" in svg and "continuous" in svg
    assert len(list(csv.DictReader(rows_file.open()))) == 4


def test_bench_compare_names_the_endpoint_it_cannot_reach(server):
    result = subprocess.run([sys.executable, "-m", "engine", "bench", "--url", server.url, "--url", "http://127.0.0.1:9",
                             "--api-key", server.api_key, "--requests", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot reach a model at http://127.0.0.1:9" in result.stderr
    two_keys = subprocess.run([sys.executable, "-m", "engine", "bench", "--url", server.url, "--api-key", "a",
                               "--api-key", "b", "--api-key", "c", "--url", server.url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert two_keys.returncode == 2 and "--api-key is given 3 times for 2 --url" in two_keys.stderr
