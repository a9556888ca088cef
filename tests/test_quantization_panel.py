"""The Models panel's load options speak about quantization: the choice goes into the load
request, the estimate shows the quantized weights beside the unquantized ones, a GGUF file keeps
its precision class, a checkpoint saved quantized loads as saved; the tuning budget's weights."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_quantization_choice_reaches_the_load_body_and_the_estimate(qtbot, tiny_model):
    from deepseek_desktop.widgets.load_options import LoadOptionsForm
    from deepseek_desktop.widgets.memory_estimate import MemoryEstimateView
    from engine.catalog import inspect_path
    from engine.memory import estimate, format_bytes

    form, view = LoadOptionsForm(["auto", "cpu"]), MemoryEstimateView()
    qtbot.addWidget(form)
    qtbot.addWidget(view)
    entry = inspect_path(tiny_model("qwen2"))
    form.fit_quantization(entry)
    assert form.quantization_box.currentText() == "none" and form.quantization_box.isEnabled()
    with qtbot.waitSignal(form.estimate_inputs_changed):
        form.quantization_box.setCurrentText("int4")
    assert form.load_body(entry.path)["quantization"] == "int4"

    result = estimate(entry, "float32", device="cpu", quantization="int4")
    view.show_estimate(result)
    weights = view.values["Weights"].text()
    assert weights.startswith(format_bytes(result.weights_bytes)) and \
        f"unquantized {format_bytes(result.float_weights_bytes)}" in weights
    assert "int4 weights, float32 activations" in view.verdict_label.text()


def test_gguf_keeps_its_precision_class_and_prequantized_loads_as_saved(qtbot, tiny_model):
    from deepseek_desktop.widgets.load_options import LoadOptionsForm
    from engine.catalog import ModelEntry
    from engine.quantization import PreQuantized

    form = LoadOptionsForm(["auto", "cpu"])
    qtbot.addWidget(form)
    for dtype, kept in (("Q8_0", "int8"), ("Q4_K", "int4"), ("Q5_1", "int4"), ("F16", "none")):
        form.fit_quantization(ModelEntry(name="m", path="/m.gguf", format="gguf", dtype=dtype))
        assert form.quantization_box.currentText() == kept
    imported = ModelEntry(name="m", path="/m", dtype="bfloat16", precision_class="int4")  # import-gguf's record
    form.fit_quantization(imported)
    assert form.quantization_box.isEnabled() and form.quantization_box.currentText() == "int4"
    saved = ModelEntry(name="m", path="/m", pre_quantized=PreQuantized("gptq", 4, "group 128"))
    form.fit_quantization(saved)
    assert not form.quantization_box.isEnabled() and form.quantization_box.currentText() == "none"
    assert "gptq 4-bit (group 128)" in form.quantization_box.toolTip()


def test_tuning_budget_reads_how_the_weights_are_held():
    from deepseek_desktop.state.tuning_budget import held_quantization

    assert held_quantization({"quantization": "int4 (torchao, group 32)"}) == "int4"
    assert held_quantization({"quantization": "pre-quantized torchao 8-bit (Int8WeightOnlyConfig)"}) == "none"
    assert held_quantization({}) == "none"
