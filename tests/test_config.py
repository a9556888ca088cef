"""EngineConfig: TOML in and out, overrides, and refusals that name field, value and what is allowed."""

import os
import subprocess
import sys

import pytest

from engine.config import ConfigError, EngineConfig


def test_a_model_table_with_a_path_is_enough(tmp_path):
    f = tmp_path / "engine.toml"
    f.write_text('[model]\npath = "/models/x"\n')
    config = EngineConfig.from_toml(f)
    assert config.model.path == "/models/x"
    assert config.server.host == "127.0.0.1" and config.batching.max_queue == 256


def test_round_trip_through_toml(tmp_path):
    config = EngineConfig.from_dict({"model": {"path": "/m", "dtype": "bfloat16", "device": "cuda:1"},
                                     "server": {"port": 9000, "api_key": "k"}, "batching": {"max_queue": 3}})
    f = tmp_path / "out.toml"
    config.write_toml(f)
    assert EngineConfig.from_toml(f) == config


def test_rewriting_a_config_keeps_its_file_mode(tmp_path):
    """A config holding API keys that its owner made private stays private when the engine
    writes it back (PUT /admin/config); a new file gets the umask's mode."""
    f = tmp_path / "engine.toml"
    f.write_text('[server]\napi_key = "secret"\n')
    f.chmod(0o600)
    EngineConfig.from_toml(f).with_overrides({"server.port": 9001}).write_toml(f)
    assert f.stat().st_mode & 0o777 == 0o600
    assert EngineConfig.from_toml(f).server.port == 9001
    fresh = tmp_path / "new.toml"
    EngineConfig().write_toml(fresh)
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"model\.pth: unknown key"):
        EngineConfig.from_dict({"model": {"pth": "/m"}})
    with pytest.raises(ConfigError, match=r"modle: unknown key"):
        EngineConfig.from_dict({"modle": {"path": "/m"}})


@pytest.mark.parametrize("data, fragments", [
    ({"model": {"dtype": "float8"}}, ["model.dtype", "'float8'", "bfloat16"]),
    ({"model": {"device": "gpu0"}}, ["model.device", "'gpu0'", "cuda:N"]),
    ({"server": {"port": 70000}}, ["server.port", "70000", "65535"]),
    ({"batching": {"max_queue": 0}}, ["batching.max_queue", "0", "greater than or equal to 1"]),
    ({"batching": {"mode": "turbo"}}, ["batching.mode", "'turbo'", "sequential"]),
])
def test_invalid_values_name_field_value_and_allowed(data, fragments):
    with pytest.raises(ConfigError) as info:
        EngineConfig.from_dict(data)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\npath=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        EngineConfig.from_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        EngineConfig.from_toml(tmp_path / "none.toml")


def test_overrides_replace_and_validate():
    config = EngineConfig().with_overrides({"server.port": 1234, "model.path": None})
    assert config.server.port == 1234 and config.model.path is None
    with pytest.raises(ConfigError, match="server.port"):
        EngineConfig().with_overrides({"server.port": -1})


def test_serve_refuses_a_bad_config_file_with_exit_code_2(tmp_path):
    f = tmp_path / "engine.toml"
    f.write_text('[model]\npath = "/m"\ncolour = "red"\n')
    result = subprocess.run([sys.executable, "-m", "engine", "serve", "--config", str(f)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model.colour: unknown key" in result.stderr


def test_flags_override_the_config_file(tmp_path):
    from engine.cli import build_parser
    from engine.cli.serve import serve_config

    f = tmp_path / "engine.toml"
    f.write_text('[model]\npath = "/m"\n[server]\nport = 9000\napi_key = "from-file"\n')
    args = build_parser().parse_args(["serve", "--config", str(f), "--port", "9100", "--dtype", "float16"])
    config = serve_config(args)
    assert (config.server.port, config.model.dtype, config.server.api_key) == (9100, "float16", "from-file")
