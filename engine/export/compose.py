"""``compose`` and ``compose-vllm``: a Docker Compose folder that runs the exported configuration.

``compose`` starts from ``packaging/docker/compose.yaml`` (the engine image built from
``packaging/docker/``, Prometheus, Grafana) and writes:

    compose.yaml        the engine (model folder and Hugging Face cache as volumes, the key from .env,
                        a /health healthcheck, a GPU reservation when the device is CUDA), Prometheus
                        scraping /metrics with the key, Grafana with the engine's dashboard
    engine.toml         the exported configuration, paths as the container sees them
    prometheus.yml      resources/prometheus.yml with the target
    grafana/            resources/grafana/: the data source and the dashboard, provisioned
    .env.example        what .env must hold (API_KEY, MODEL_DIR, DEEPSEEK_SOURCE …)

``compose-vllm`` is the same around the official vLLM image, with the exported ``vllm.yaml`` mounted.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Optional

import yaml

from engine.export import vllm as vllm_format
from engine.export.common import Note, Rendered, commented, header_lines
from engine.export.engine_toml import exportable, render_config
from engine.export.source import ExportError, ExportSource
from engine.resources import read_resource

TEMPLATE = "packaging/docker/compose.yaml"
GRAFANA_FILES = ("grafana/provisioning/datasources/prometheus.yaml", "grafana/provisioning/dashboards/deepseek.yaml",
                 "grafana/dashboards/deepseek-engine.json")
VLLM_IMAGE = {"gpu": "vllm/vllm-openai:v0.11.0", "cpu": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.11.0"}
CONTAINER_PORT = 8000
HEALTHCHECK = ["CMD", "python3", "-c",
               "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]


def _model_mount(source: ExportSource) -> tuple[str, str]:
    """(host path, container path) of the model."""
    path = source.config.model.path
    if not path:
        raise ExportError("a compose export needs a model: the source has no model.path (load a model first, "
                          "or export from a config that names one)")
    name = PurePosixPath(path.rstrip("/")).name or "model"
    return path, f"/models/{name}"


def _gpu(source: ExportSource) -> bool:
    return source.device.startswith("cuda")


def _reservation(count: Any = "all") -> dict[str, Any]:
    return {"resources": {"reservations": {"devices": [{"driver": "nvidia", "count": count, "capabilities": ["gpu"]}]}}}


def _template() -> dict[str, Any]:
    return yaml.safe_load(read_resource(TEMPLATE))


def _monitoring(files: dict[str, str], compose: dict[str, Any], target: str) -> None:
    """Prometheus (scraping ``target`` with the key) and Grafana, their files from resources/."""
    prometheus = yaml.safe_load(read_resource("resources/prometheus.yml"))
    prometheus["scrape_configs"][0]["static_configs"] = [{"targets": [f"{target}:{CONTAINER_PORT}"]}]
    files["prometheus.yml"] = ("# Prometheus: scrapes /metrics with the API key (the compose secret engine_api_key)\n"
                               + yaml.safe_dump(prometheus, sort_keys=False))
    for relative in GRAFANA_FILES:
        files[relative] = read_resource(f"resources/{relative}")
    services = compose["services"]
    services["prometheus"]["volumes"][0] = "./prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    services["prometheus"]["depends_on"] = [target]
    services["grafana"]["volumes"][:2] = ["./grafana/provisioning:/etc/grafana/provisioning:ro",
                                          "./grafana/dashboards:/var/lib/grafana/dashboards:ro"]


def _env_example(model_dir: str, extra: dict[str, str]) -> str:
    lines = ["# Copy to .env beside compose.yaml and fill in; compose reads it. Never commit .env.",
             "API_KEY=change-me-to-a-long-random-string", f"MODEL_DIR={model_dir}", "HF_CACHE=~/.cache/huggingface",
             *[f"{k}={v}" for k, v in extra.items()],
             "BIND_ADDRESS=127.0.0.1", "ENGINE_PORT=8000", "PROMETHEUS_PORT=9090", "GRAFANA_PORT=3000",
             "GRAFANA_ADMIN_PASSWORD=admin"]
    return "\n".join(lines) + "\n"


def _dump(compose: dict[str, Any], head: list[str]) -> str:
    return commented(head) + "\n" + yaml.safe_dump(compose, sort_keys=False, default_flow_style=False, width=120)


def render_engine(source: ExportSource, **_options: Any) -> Rendered:
    host_model, container_model = _model_mount(source)
    config, notes = exportable(source.config)
    model = config.model.model_copy(update={"path": container_model})
    server = config.server.model_copy(update={"host": "0.0.0.0", "port": CONTAINER_PORT})
    cache = config.cache.model_copy(update={"dir": None})
    inside = config.model_copy(update={"model": model, "server": server, "cache": cache})
    if source.config.cache.dir:
        notes.append(Note("cache.dir", f"{source.config.cache.dir} is a host folder: the disk tier lives in the "
                                       "engine-data volume (/data/cache/prefix-kv)"))
    if source.config.server.port != CONTAINER_PORT or source.config.server.host != "0.0.0.0":
        notes.append(Note("server.host, server.port", f"{source.config.server.host}:{source.config.server.port} "
                                                      f"becomes 0.0.0.0:{CONTAINER_PORT} in the container, published "
                                                      "on ${BIND_ADDRESS}:${ENGINE_PORT} (.env)"))
    compose = _template()
    engine = compose["services"]["engine"]
    gpu = _gpu(source)
    engine["build"] = {"context": "${DEEPSEEK_SOURCE:?set DEEPSEEK_SOURCE in .env: the project's source folder}",
                       "dockerfile": "packaging/docker/Dockerfile.cuda" if gpu else "packaging/docker/Dockerfile"}
    engine["image"] = "deepseek-engine:0.1.0-cuda" if gpu else "deepseek-engine:0.1.0-cpu"
    engine["command"] = ["--config", "/config/engine.toml"]
    engine["volumes"] = [f"${{MODEL_DIR:?set MODEL_DIR in .env}}:{container_model}:ro",
                         "${HF_CACHE:-~/.cache/huggingface}:/data/huggingface",
                         "./engine.toml:/config/engine.toml:ro", "engine-data:/data"]
    if gpu:
        engine["deploy"] = _reservation()
    files: dict[str, str] = {}
    _monitoring(files, compose, "engine")
    head = header_lines(source, "Docker Compose: deepseek-engine, Prometheus, Grafana", notes)
    head += ["", "cp .env.example .env   # set API_KEY, MODEL_DIR and DEEPSEEK_SOURCE", "docker compose up --build -d",
             f"engine: http://${{BIND_ADDRESS}}:${{ENGINE_PORT}} · Prometheus :9090 · Grafana :3000"]
    toml_head = header_lines(source, "deepseek-engine configuration, as the container sees it", notes)
    files["engine.toml"] = commented(toml_head) + "\n" + render_config(inside)
    files[".env.example"] = _env_example(host_model, {"DEEPSEEK_SOURCE": "/path/to/deepseek-desktop"})
    files["compose.yaml"] = _dump(compose, head)
    return Rendered(files=dict(sorted(files.items())), notes=notes)


def render_vllm(source: ExportSource, nodes: int = 1, gpus_per_node: Optional[int] = None,
                **_options: Any) -> Rendered:
    host_model, container_model = _model_mount(source)
    if nodes > 1:
        raise ExportError("compose-vllm runs on one host: for several nodes export --format vllm --nodes N and "
                          "start Ray on each node (README: Several nodes)")
    args, env, notes = vllm_format.vllm_args(source, nodes=nodes, gpus_per_node=gpus_per_node)
    args.update({"model": container_model, "host": "0.0.0.0", "port": CONTAINER_PORT})
    gpu = _gpu(source)
    compose = _template()
    services = compose["services"]
    del services["engine"]
    vllm_service: dict[str, Any] = {
        "image": "${VLLM_IMAGE:-" + VLLM_IMAGE["gpu" if gpu else "cpu"] + "}",
        "command": ["--config", "/config/vllm.yaml"],
        "environment": {"VLLM_API_KEY": "${API_KEY:?set API_KEY in .env}", "HF_HOME": "/data/huggingface", **env},
        "volumes": [f"${{MODEL_DIR:?set MODEL_DIR in .env}}:{container_model}:ro",
                    "${HF_CACHE:-~/.cache/huggingface}:/data/huggingface", "./vllm.yaml:/config/vllm.yaml:ro"],
        "ports": ["${BIND_ADDRESS:-127.0.0.1}:${ENGINE_PORT:-8000}:8000"],
        "ipc": "host",
        "healthcheck": {"test": HEALTHCHECK, "interval": "15s", "timeout": "5s", "retries": 5, "start_period": "10m"},
        "restart": "unless-stopped",
    }
    if gpu:
        vllm_service["deploy"] = _reservation(args.get("tensor-parallel-size", 1))
    compose["services"] = {"vllm": vllm_service, **services}
    compose["volumes"].pop("engine-data", None)
    files: dict[str, str] = {}
    _monitoring(files, compose, "vllm")
    yaml_head = header_lines(source, "vLLM configuration (mounted at /config/vllm.yaml)", notes)
    files["vllm.yaml"] = commented(yaml_head) + "\n" + yaml.safe_dump(vllm_format.yaml_keys(args), sort_keys=False)
    head = header_lines(source, "Docker Compose: vLLM (official image), Prometheus, Grafana", notes)
    head += ["", "cp .env.example .env   # set API_KEY and MODEL_DIR", "docker compose up -d",
             "the image's entrypoint is 'vllm serve'; VLLM_IMAGE in .env picks another tag"]
    files[".env.example"] = _env_example(host_model, {"VLLM_IMAGE": VLLM_IMAGE["gpu" if gpu else "cpu"]})
    files["compose.yaml"] = _dump(compose, head)
    return Rendered(files=dict(sorted(files.items())), notes=notes)
