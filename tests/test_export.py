"""``deepseek-engine export`` and ``engine.export``: golden files for every format, the vLLM mapping
field by field, the engine-toml round trip through a real ``serve --config``, a server that is not
ours, presets, and bad input (clear message, exit 2, nothing left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from engine.config import EngineConfig
from engine.export import FORMATS, ExportError, ExportSource, export, from_engine, from_file, render
from engine.export.vllm import MAPPING, vllm_args
from engine.presets import PresetError, PresetStore
from helpers import ROOT, EngineServer

DATA = Path(__file__).parent / "data" / "export"
GOLDEN = DATA / "golden"
SWEEP = "tests/data/export/sweep.json"
EPOCH = "1796040000"  # 2026-11-30T12:00:00Z: golden files carry a fixed export date
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "export", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH, **(env or {})})


@pytest.fixture
def fixed_date(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.chdir(ROOT)


def sweep_source() -> ExportSource:
    from engine.export.source import with_model_path

    return with_model_path(from_file(f"{SWEEP}#1"), "/models/SmolLM2-135M-Instruct.gguf")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run UPDATE_GOLDEN=1 pytest {__file__} to write it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (f"{name} differs from its golden file {path}. If the change is intended, refresh "
                              f"it with: UPDATE_GOLDEN=1 pytest tests/test_export.py -k golden, and review the diff")


# ---------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("fmt", ["engine-toml", "vllm", "llama-server", "ollama", "record", "compose", "compose-vllm"])
def test_golden(fmt, fixed_date):
    rendered = render(sweep_source(), fmt)
    for relative, text in rendered.files.items():
        if relative.startswith("grafana/"):
            assert text == (ROOT / "resources" / relative).read_text(), "grafana files are resources/ copied as-is"
            continue
        check_golden(f"{fmt}/{relative}", text)


def test_every_file_states_its_origin_and_what_did_not_map(fixed_date):
    for fmt in FORMATS:
        for relative, text in render(sweep_source(), fmt).files.items():
            if relative.startswith("grafana/") or relative in (".env.example", "prometheus.yml"):
                continue
            assert "sweep tests/data/export/sweep.json point 1" in text, (fmt, relative)
            assert "sha256:0123456789abcdef01234567" in text, (fmt, relative)
            assert "2026-11-30T12:00:00Z" in text, (fmt, relative)
            assert "not mapped" in text or "not_mapped" in text, (fmt, relative)


def test_template_is_the_default_config_and_covers_every_field():
    import tomllib

    text = (ROOT / "resources" / "engine.toml").read_text()
    assert EngineConfig.from_dict(tomllib.loads(text)) == EngineConfig()
    for section, model in EngineConfig.model_fields.items():
        for name in model.annotation.model_fields:
            shown = (f"{name} = ", f"[{section}.{name}]", f"[[{section}.{name}]]")
            assert any(s in text for s in shown), f"resources/engine.toml has no line for {section}.{name}: document it there"


def test_engine_toml_keeps_secrets_out(tmp_path):
    config = EngineConfig.from_dict({"model": {"path": "/m"}, "server": {
        "api_key": "super-secret-key", "parent_pid": 42,
        "keys": [{"name": "ci", "key": "literal-secret-1"}, {"name": "ops", "key_env": "OPS_KEY", "role": "admin"}],
        "rate_limit": {"requests_per_s": 2, "burst": 4}}})
    result = export(ExportSource(config=config, origin="test"), "engine-toml", tmp_path / "e.toml")
    text = result.paths[0].read_text()
    assert "super-secret-key" not in text and "literal-secret-1" not in text
    again = EngineConfig.from_toml(result.paths[0])
    assert [k.name for k in again.server.keys] == ["ops"] and again.server.rate_limit.burst == 4
    assert again.server.api_key is None and again.server.parent_pid is None
    assert {n.setting for n in result.notes} >= {"server.api_key", "server.keys", "server.parent_pid"}


# ---------------------------------------------------------------------------- vLLM mapping, field by field


def vllm(config: dict, status: dict | None = None, **options):
    source = ExportSource(config=EngineConfig.from_dict({"model": {"path": "/models/x"}, **config}), origin="test",
                          status=status)
    args, env, notes = vllm_args(source, **options)
    return args, env, {n.setting: n.why for n in notes}


@pytest.mark.parametrize("config, expected", [
    ({"model": {"path": "/models/x"}}, {"model": "/models/x"}),
    ({"model": {"path": "/m", "served_model_name": "smol"}}, {"served-model-name": "smol"}),
    ({"model": {"path": "/m", "dtype": "bfloat16"}}, {"dtype": "bfloat16"}),
    ({"model": {"path": "/m", "max_context": 2048}}, {"max-model-len": 2048}),
    ({"model": {"path": "/m", "trust_remote_code": True}}, {"trust-remote-code": True}),
    ({"batching": {"max_batch_size": 12}}, {"max-num-seqs": 12}),
    ({"batching": {"mode": "sequential", "max_batch_size": 12}}, {"max-num-seqs": 1}),
    ({"batching": {"mode": "continuous", "max_batch_tokens": 2048}}, {"max-num-batched-tokens": 2048}),
    ({"batching": {"mode": "continuous"}}, {"max-num-batched-tokens": 512}),
    ({"batching": {"mode": "continuous", "page_size": 16, "num_blocks": 900}},
     {"block-size": 16, "num-gpu-blocks-override": 900}),
    ({"batching": {"mode": "continuous", "block_sharing": False}}, {"enable-prefix-caching": False}),
    ({"cache": {"type": "none"}}, {"enable-prefix-caching": False}),
    ({"cache": {"memory_mb": 3072, "disk_mb": 0}},
     {"enable-prefix-caching": True, "kv-offloading-size": 3.0, "kv-offloading-backend": "native"}),
    ({"server": {"host": "0.0.0.0", "port": 9000, "log_level": "debug"}},
     {"host": "0.0.0.0", "port": 9000, "uvicorn-log-level": "debug"}),
    ({"server": {"port": 0}}, {"port": 8000}),
    ({"model": {"path": "/m", "device": "cuda"}}, {"tensor-parallel-size": 1}),
    ({"model": {"path": "/m", "device": "cuda"}, "load": {"max_memory": {"cuda:0": "20GiB", "cuda:1": "20GiB"}}},
     {"tensor-parallel-size": 2}),
])
def test_vllm_mapping(config, expected):
    args, _env, _notes = vllm(config)
    for key, value in expected.items():
        assert args.get(key) == value, (key, args)


def test_vllm_mapping_table_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for engine_setting, vllm_arg, _how in MAPPING:
        assert f"| {engine_setting} | {vllm_arg} |" in readme, f"README's vLLM table lacks the row for {engine_setting}"


def test_vllm_says_what_it_cannot_express():
    args, _env, notes = vllm({"batching": {"mode": "dynamic", "max_wait_ms": 20}, "cache": {"disk_mb": 8192}})
    assert "requests join at every step" in notes["batching.mode = dynamic"] and "20 ms" in notes["batching.mode = dynamic"]
    assert "LMCache" in notes["cache.disk_mb"] and "8192 MB" in notes["cache.disk_mb"]
    assert "kv-offloading-backend" in args and args["kv-offloading-backend"] == "native"  # the RAM tier still maps
    for setting in ("batching.max_queue", "batching.request_timeout_s", "server.circuit"):
        assert setting in notes


def test_vllm_several_nodes_and_the_api_key():
    args, _env, notes = vllm({"model": {"path": "/m", "device": "cuda"}}, nodes=2, gpus_per_node=8)
    assert args["tensor-parallel-size"] == 8 and args["pipeline-parallel-size"] == 2
    assert args["distributed-executor-backend"] == "ray"
    text = render(ExportSource(config=EngineConfig.from_dict({"model": {"path": "/m"},
                                                              "server": {"api_key": "k-secret-123"}}),
                               origin="t"), "vllm").files["vllm.yaml"]
    assert "k-secret-123" not in text and "VLLM_API_KEY" in text


def test_vllm_memory_from_the_estimate(llama_dir):
    args, env, _notes = vllm({"model": {"path": str(llama_dir), "max_context": 256}, "batching": {"max_batch_size": 4}})
    assert int(env["VLLM_CPU_KVCACHE_SPACE"]) >= 1  # CPU: the KV space, in GiB
    source = ExportSource(config=EngineConfig.from_dict({"model": {"path": str(llama_dir), "device": "cuda"}}),
                          origin="t", hardware={"gpus": [{"memory_bytes": 8 * 2**30}]})
    args, _env, _notes = vllm_args(source)
    assert 0.3 <= args["gpu-memory-utilization"] <= 0.95 and args["tensor-parallel-size"] == 1


# ---------------------------------------------------------------------------- from a running engine


def test_engine_toml_round_trip_through_serve(server, tmp_path):
    out = tmp_path / "engine.toml"
    result = cli("--url", server.url, "--api-key", server.api_key, "--format", "engine-toml", "--out", str(out))
    assert result.returncode == 0, result.stderr
    source_config = httpx.get(server.url + "/admin/config", headers=server.headers).json()
    with EngineServer(None, extra_args=["--config", str(out)]) as again:
        assert httpx.get(again.url + "/admin/config", headers=again.headers).json() == source_config
    assert "fingerprint sha256:" in out.read_text()  # the loaded model is on this machine


def test_record_from_a_running_engine_reproduces_the_config(server, tmp_path):
    record = tmp_path / "run.json"
    assert cli("--url", server.url, "--api-key", server.api_key, "--format", "record", "--out", str(record)).returncode == 0
    data = json.loads(record.read_text())
    assert data["model"]["params"] and data["model"]["fingerprint"].startswith("sha256:")
    assert data["hardware"]["cpu"]["cores"] and data["hardware"]["ram_bytes"] > 0
    assert data["software"]["python"] and data["software"]["torch"] and data["software"]["transformers"]
    assert data["status"]["state"] == "ready"
    direct, again = tmp_path / "direct.toml", tmp_path / "again.toml"
    cli("--url", server.url, "--api-key", server.api_key, "--format", "engine-toml", "--out", str(direct))
    assert cli("--from", str(record), "--format", "engine-toml", "--out", str(again)).returncode == 0
    assert EngineConfig.from_toml(again) == EngineConfig.from_toml(direct)


def test_vllm_and_compose_from_a_running_engine(server, tmp_path):
    result = cli("--url", server.url, "--api-key", server.api_key, "--format", "vllm", "--out", str(tmp_path / "v.yaml"))
    assert result.returncode == 0, result.stderr
    assert " vllm serve " in result.stdout and "--max-num-seqs 32" in result.stdout
    assert "VLLM_CPU_KVCACHE_SPACE=" in result.stdout  # the estimate of the loaded model (CPU)
    result = cli("--url", server.url, "--api-key", server.api_key, "--format", "compose", "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c" / "compose.yaml").is_file() and (tmp_path / "c" / "engine.toml").is_file()


class _FakeVLLM(BaseHTTPRequestHandler):
    """What a vLLM server answers on the routes export reads (no /admin)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        bodies = {
            "/v1/models": json.dumps({"object": "list", "data": [{"id": "smol", "object": "model", "owned_by": "vllm",
                                                                  "root": "/models/smol", "max_model_len": 2048}]}),
            "/metrics": 'vllm:cache_config_info{block_size="16",enable_prefix_caching="True",'
                        'gpu_memory_utilization="0.9"} 1.0\n',
        }
        body = bodies.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write((body or '{"detail": "Not Found"}').encode())

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_ours(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVLLM)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        source = from_engine(url)
        assert source.foreign == "vLLM"
        assert source.config.model.path == "/models/smol" and source.config.model.max_context == 2048
        assert source.config.batching.page_size == 16 and source.config.batching.block_sharing is True
        result = cli("--url", url, "--format", "engine-toml", "--out", str(tmp_path / "e.toml"))
        assert result.returncode == 0, result.stderr
        assert "unknown: vLLM tells only" in (tmp_path / "e.toml").read_text()
    finally:
        httpd.shutdown()


# ---------------------------------------------------------------------------- bad input


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("args, message", [
    (["--from", "nowhere.toml"], "source file not found: nowhere.toml"),
    (["--from", f"{SWEEP}"], "name one of its 3 points"),
    (["--from", f"{SWEEP}#7"], "no point 7 (it has 3: 0 to 2)"),
    (["--from", f"{SWEEP}#2"], "was refused by the engine"),
    (["--from", "tests/data/compose-spec/compose-spec.json"], "is not a file export reads"),
    (["--from", "README.md"], "is neither a config TOML nor JSON"),
    (["--url", "http://127.0.0.1:9"], "cannot read the engine at http://127.0.0.1:9"),
])
def test_bad_sources_exit_2(args, message, tmp_path):
    result = cli(*args, "--format", "engine-toml", "--out", str(tmp_path / "x.toml"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert _left_behind(tmp_path) == []


def test_foreign_record_and_unwritable_targets(tmp_path):
    record = tmp_path / "other.json"
    record.write_text(json.dumps({"kind": "deepseek-desktop/run-record", "version": 99, "config": {}}))
    result = cli("--from", str(record), "--format", "vllm", "--out", str(tmp_path / "v.yaml"))
    assert result.returncode == 2 and "record version 99" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for fmt, out in (("vllm", blocker / "v.yaml"), ("compose", blocker / "c"), ("vllm", tmp_path / "missing" / "v.yaml"),
                     ("compose", blocker)):
        result = cli("--from", f"{SWEEP}#1", "--model", "/models/m", "--format", fmt, "--out", str(out))
        assert result.returncode == 2 and ("cannot write" in result.stderr or "is a file" in result.stderr), result.stderr
    assert _left_behind(tmp_path) == ["a-file", "other.json"]


def test_formats_that_need_what_the_source_lacks(tmp_path, fixed_date):
    source = ExportSource(config=EngineConfig.from_dict({"model": {"path": "/models/folder"}}), origin="t")
    with pytest.raises(ExportError, match="pass --gguf FILE"):
        export(source, "llama-server", tmp_path / "l.sh")
    with pytest.raises(ExportError, match="needs a model"):
        export(ExportSource(config=EngineConfig(), origin="t"), "compose", tmp_path / "c")
    assert _left_behind(tmp_path) == []
    result = export(source, "ollama", tmp_path / "Modelfile", gguf="/g/model.gguf")
    assert "FROM /g/model.gguf" in result.paths[0].read_text()


# ---------------------------------------------------------------------------- presets


def test_presets_save_list_load_rename_delete_and_export(tmp_path):
    store = PresetStore(tmp_path / "presets")
    config = EngineConfig.from_dict({"model": {"path": "/models/x.gguf"}, "batching": {"max_batch_size": 6},
                                     "server": {"api_key": "never-saved"}})
    path = store.save("fast chat", config, {"temperature": 0.2, "top_p": 0.9, "stop": ["END"]})
    assert "never-saved" not in path.read_text()
    assert store.names() == ["fast chat"]
    loaded, sampling = store.load("fast chat")
    assert loaded.batching.max_batch_size == 6 and sampling == {"temperature": 0.2, "top_p": 0.9, "stop": ["END"]}
    store.rename("fast chat", "chat-6")
    assert store.names() == ["chat-6"]
    source = from_file(str(store.path("chat-6")))
    assert source.sampling["temperature"] == 0.2
    assert "PARAMETER temperature 0.2" in render(source, "ollama").files["Modelfile"]
    for bad in ("../escape", "", "x" * 80):
        with pytest.raises(PresetError):
            store.save(bad, config)
    with pytest.raises(PresetError, match="temperature"):
        store.save("hot", config, {"temperature": 9})
    store.delete("chat-6")
    assert store.names() == [] and _left_behind(store.folder) == []
