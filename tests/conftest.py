import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models  # noqa: E402
from helpers import EngineServer  # noqa: E402

ARCHITECTURES = ["llama", "qwen2", "deepseek_v3"]


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

