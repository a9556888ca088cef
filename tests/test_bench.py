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
