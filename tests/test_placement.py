"""The estimate's layer placement (engine.placement, torch-free) against transformers' own planner.

transformers 5 plans ``device_map="auto"`` in ``transformers.integrations.accelerate._get_device_map``
(get_balanced_memory, then infer_auto_device_map). That planner needs no GPU: it plans for GPU
indices named in ``max_memory`` (accelerate only warns that they are absent), on a model built on
the meta device. Each case saves a tiny random checkpoint of a real architecture, estimates from its
files, and compares device map and per-device summary with what transformers plans for the same
config. No GPU here: the "cuda:N" devices are planned for, never used.
"""

from __future__ import annotations

import json
import logging

import pytest

from engine.catalog import inspect_path
from engine.memory import estimate, layer_device_map, resolve_dtype
from engine.placement import MaxMemoryError, clean_device_map, summarize
from engine.quantization import QuantizationPlan
from tests.tiny_models import _config

torch = pytest.importorskip("torch")

KiB = 1024
# Limits around the tiny models' sizes (6 layers of 64 wide: ~1 MiB in float32), so the layers
# spread over both GPUs, overflow to the CPU, or to disk.
CASES = [
    {"cuda:0": "400KiB", "cuda:1": "400KiB", "cpu": "1GiB"},
    {"cuda:0": "300KiB", "cuda:1": "300KiB", "cpu": "1GiB"},
    {"cuda:0": "10GiB", "cuda:1": "10GiB"},                  # balanced: an equal share each
    {"cuda:0": "10GiB", "cuda:1": "10GiB", "cuda:2": "10GiB"},  # balanced share + 1.25x the largest layer
    {"cuda:0": "250KiB", "cuda:1": "250KiB", "cuda:2": "250KiB", "cpu": "300KiB"},  # then disk
    {"cuda:0": "200KiB", "cpu": "10GiB"},                     # one GPU, the rest offloaded
    {"cpu": "500KiB"},                                        # a CPU load capped: disk offload
    {"cuda:0": 1000000, "cuda:1": "0.5MB", "cpu": "2GB"},     # bytes and decimal units
]
MODELS = [("llama", False), ("llama", True), ("qwen2", False), ("deepseek_v3", False)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One saved tiny checkpoint per (architecture, tied head), and its config (6 layers)."""
    from transformers import AutoModelForCausalLM

    out = {}
    for arch, tied in MODELS:
        config = _config(arch, 400, 1, 0, num_hidden_layers=6, tie_word_embeddings=tied)
        folder = tmp_path_factory.mktemp(f"{arch}-{'tied' if tied else 'untied'}")
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
        out[(arch, tied)] = (folder, config)
    return out


def transformers_device_map(config, max_memory: dict[str, str], dtype):
    """What ``from_pretrained(device_map="auto", max_memory=...)`` plans, on a meta-device model."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations.accelerate import _get_device_map

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    limits = {(int(k.partition(":")[2] or 0) if k.startswith("cuda") else k): v for k, v in max_memory.items()}
    quiet = logging.getLogger("accelerate.utils.modeling")  # "Device 1 is not available" (no GPU here)
    level, quiet.level = quiet.level, logging.ERROR
    try:
        return dict(_get_device_map(model, "auto", limits, None))
    finally:
        quiet.setLevel(level)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch,tied", MODELS)
def test_placement_matches_transformers_auto_device_map_planned_without_gpu(checkpoints, arch, tied, dtype):
    folder, config = checkpoints[(arch, tied)]
    entry = inspect_path(folder)
    assert entry.tied_embeddings is tied
    placed_somewhere_else = 0
    for max_memory in CASES:
        theirs = transformers_device_map(config, max_memory, getattr(torch, dtype))
        tree, ours, limits = layer_device_map(entry, resolve_dtype(dtype, "cpu"), QuantizationPlan("none"),
                                              "cuda:0", max_memory)
        assert ours == theirs, f"{arch} tied={tied} {dtype} {max_memory}"
        # The estimate's per-device summary is the summary of transformers' own plan.
        result = estimate(entry, dtype, device="cpu", max_memory=max_memory)
        expected = [vars(p) for p in summarize(tree, clean_device_map(dict(theirs)), limits)]
        assert result.placement == expected
        placed_somewhere_else += len(set(theirs.values())) > 1
        # Every byte of the weights is somewhere (the rotary buffers aside, which the files lack).
        assert 0 <= sum(p["bytes"] for p in result.placement) - result.weights_bytes < 1 * KiB
    assert placed_somewhere_else >= 5  # the cases do spread the layers, not all on one device


def test_placement_says_which_layers_land_where(checkpoints):
    folder, _ = checkpoints[("llama", False)]
    entry = inspect_path(folder)
    result = estimate(entry, "float32", device="cpu", max_memory={"cuda:0": "400KiB", "cuda:1": "400KiB", "cpu": "1GiB"})
    assert [p["device"] for p in result.placement] == ["cuda:0", "cuda:1", "cpu"]
    assert result.placement[0]["modules"] == ["embed_tokens", "layer 0"]
    assert result.placement[-1]["modules"][-2:] == ["norm", "lm_head"]
    lines = result.placement_lines()
    assert lines[0].startswith("cuda:0: embed_tokens + layer 0 (") and lines[0].endswith("of 400.00 KiB)")
    # Without max_memory, everything on the one device.
    alone = estimate(entry, "float32", device="cpu")
    assert [(p["device"], p["modules"]) for p in alone.placement] == [("cpu", ["embed_tokens", "layers 0-5", "norm", "lm_head"])]


QUANTIZED_CASES = {
    "int8": [{"cuda:0": "150KiB", "cuda:1": "150KiB", "cpu": "1GiB"}, {"cuda:0": "100KiB", "cuda:1": "200KiB", "cpu": "1GiB"},
             {"cuda:0": "10GiB", "cuda:1": "10GiB", "cuda:2": "10GiB"}],
    # int4's planned size depends on the config the loader picks: torchao's tile format on a GPU
    # (0.5 byte a weight), the CPU config here (1 byte): compared on CPU-only limits, as it runs here.
    "int4": [{"cpu": "300KiB"}, {"cpu": "200KiB"}],
}


@pytest.mark.parametrize("arch,tied", MODELS)
def test_quantized_placement_matches_transformers_with_its_quantizer_planned_without_gpu(checkpoints, arch, tied):
    """A quantized load is placed by transformers' quantizer's sizes (quantized linear weights at
    its element size, the tables in float, limits x 0.9 after balancing); the bytes each device
    then holds are the census's (smaller: scales aside, the tables are int8 after the load)."""
    pytest.importorskip("torchao")
    from transformers import AutoModelForCausalLM
    from transformers.integrations.accelerate import _get_device_map
    from transformers.quantizers import AutoHfQuantizer

    from engine.memory import plan_quantization
    from engine.quantization import census_of
    from engine.runtime.quantize import transformers_config

    folder, config = checkpoints[(arch, tied)]
    entry = inspect_path(folder)
    for method, cases in QUANTIZED_CASES.items():
        plan = plan_quantization(entry, method, "float32", "cpu")
        quantizer = AutoHfQuantizer.from_config(transformers_config(plan, census_of(str(folder))), pre_quantized=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        quantizer.preprocess_model(model=model, dtype=torch.float32, device_map="auto", checkpoint_files=None,
                                   use_kernels=False)
        for max_memory in cases:
            limits = {(int(k.partition(":")[2]) if k.startswith("cuda") else k): v for k, v in max_memory.items()}
            quiet = logging.getLogger("accelerate.utils.modeling")
            level, quiet.level = quiet.level, logging.ERROR
            try:
                theirs = dict(_get_device_map(model, "auto", limits, quantizer))
            finally:
                quiet.setLevel(level)
            _, ours, _ = layer_device_map(entry, "float32", plan, "cpu", max_memory)
            assert ours == theirs, f"{arch} tied={tied} {method} {max_memory}"
            result = estimate(entry, "float32", device="cpu", max_memory=max_memory, quantization=method)
            assert abs(sum(p["bytes"] for p in result.placement) - result.weights_bytes) < 1 * KiB
    float_weights = estimate(entry, "float32", device="cpu").weights_bytes
    assert result.weights_bytes < 0.75 * float_weights  # held as quantized (DeepSeek-V3's fused experts stay float)


def test_bad_max_memory_is_refused_with_what_is_expected(checkpoints):
    entry = inspect_path(checkpoints[("llama", False)][0])
    with pytest.raises(MaxMemoryError, match="expected cuda, cuda:N, mps, cpu or disk"):
        estimate(entry, "float32", max_memory={"gpu0": "1GiB"})
    for size in ("lots", "1000000"):  # accelerate refuses a number as text too
        with pytest.raises(MaxMemoryError, match="GiB"):
            estimate(entry, "float32", max_memory={"cuda:0": size})


@pytest.mark.gui
def test_models_panel_estimate_says_where_the_layers_go(qtbot, checkpoints):
    """The Models panel's estimate text lists the devices and their layers, spread over the
    engine's max_memory once it is known (set_max_memory, from GET /admin/config)."""
    from deepseek_desktop.panels.models import ModelsPanel
    from deepseek_desktop.state.library import ModelLibrary
    from deepseek_desktop.notifier import Notifier

    folder, _ = checkpoints[("llama", True)]
    library = ModelLibrary()
    panel = ModelsPanel(library, Notifier())
    qtbot.addWidget(panel)
    panel.selected = inspect_path(folder)
    with qtbot.waitSignal(library.estimate_ready, timeout=30_000):
        panel._estimate()
    text = panel.estimate.placement_label.text()
    assert "embed_tokens + layers 0-5 + norm + lm_head" in text
    with qtbot.waitSignal(library.estimate_ready, timeout=30_000):
        panel.set_max_memory({"cuda:0": "300KiB", "cuda:1": "300KiB", "cpu": "1GiB"})
    lines = panel.estimate.placement_label.text().splitlines()
    assert lines[1].startswith("cuda:0: embed_tokens + lm_head (") and lines[2].startswith("cuda:1: layers 0-1 (")
    assert lines[3].startswith("cpu: layers 2-5 + norm (")


def test_tuning_budget_says_which_layers_each_device_holds_with_stand_in_gpu_memory(checkpoints):
    """The Tuning panel's budget, for an engine whose [load] max_memory spreads the model: one
    budget a device of the placement, each with its layers and its share of the weights. No GPU
    here: the GPUs' memory readings are stand-ins (DeviceMemory values), the placement is real."""
    from deepseek_desktop.state.tuning_budget import compute_budgets
    from deepseek_desktop.state.tuning_engine import EngineView
    from engine.memory import DeviceMemory

    entry = inspect_path(checkpoints[("llama", False)][0])
    limits = {"cuda:0": "400KiB", "cuda:1": "400KiB", "cpu": "1GiB"}
    gib = 2**30
    view = EngineView(url="http://engine", admin=True, status={"dtype": "float32", "device": "cuda:0", "path": entry.path},
                      weights={"cuda:0": 1_000_000}, entry=entry, max_memory=limits,
                      memory={d: DeviceMemory(d, 8 * gib, 6 * gib, "stand-in") for d in ("cuda:0", "cuda:1", "cpu")})
    settings = {"batching.max_batch_size": 2, "cache.type": "none", "batching.mode": "dynamic"}
    budgets = compute_budgets(view, settings.get, (), 64, "auto")
    placement = estimate(entry, "float32", device="cpu", max_memory=limits).placement
    assert [(b.device, b.layers) for b in budgets] == [(p["device"], p["modules"]) for p in placement]
    weights = [b.part("weights").bytes for b in budgets]
    assert weights[0] < weights[2] and abs(sum(weights) - sum(p["bytes"] for p in placement)) < 1 * KiB
    # Without max_memory: the one device, all its layers, the measured weights as before.
    view.max_memory = None
    [alone] = compute_budgets(view, settings.get, (), 64, "auto")
    assert alone.device == "cuda:0" and alone.layers == ["embed_tokens", "layers 0-5", "norm", "lm_head"]
    assert alone.part("weights").bytes == 1_000_000 and alone.part("weights").measured


def test_inspect_prints_where_the_layers_go(checkpoints, capsys):
    from engine.cli import main

    folder = str(checkpoints[("llama", True)][0])
    main(["inspect", folder, "--dtype", "float32", "--max-memory", "cuda:0=300KiB", "--max-memory", "cuda:1=300KiB",
          "--max-memory", "cpu=1GiB"])
    out = capsys.readouterr().out
    assert 'where the layers go (max_memory, as device_map="auto" spreads them):' in out
    assert "  cuda:0: embed_tokens + lm_head (" in out and "  cuda:1: layers 0-1 (" in out
    assert "  cpu: layers 2-5 + norm (" in out
    main(["inspect", folder, "--json", "--max-memory", "cuda:0=1GiB"])
    body = json.loads(capsys.readouterr().out)
    assert body["estimate"]["max_memory"] == {"cuda:0": "1GiB"}
    assert [p["device"] for p in body["estimate"]["placement"]] == ["cuda:0"]
    with pytest.raises(SystemExit, match="DEVICE=SIZE"):
        main(["inspect", folder, "--max-memory", "cuda:0"])
