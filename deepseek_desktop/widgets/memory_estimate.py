"""MemoryEstimateView: the memory a model would take with the options chosen (weights, KV cache,
activations, reserve, total, free on the device) and the verdict: fits, tight, will not fit."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from deepseek_desktop.widgets.labels import WrapLabel
from engine.memory import format_bytes

VERDICT_TEXT = {"fits": "Fits", "tight": "Tight", "will-not-fit": "Will not fit", "unknown": "Unknown"}
PARTS = ["Weights", "KV cache", "Activations", "Reserve", "Total needed", "Free on device"]


class MemoryEstimateView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.verdict_label = WrapLabel("—")
        self.verdict_label.setObjectName("verdict")  # the theme colours it by its "verdict" property
        grid = QGridLayout()
        self.values: dict[str, QLabel] = {}
        for row, key in enumerate(PARTS):
            grid.addWidget(QLabel(key), row, 0)
            value = QLabel("—")
            value.setAlignment(Qt.AlignmentFlag.AlignRight)
            self.values[key] = value
            grid.addWidget(value, row, 1)
        # Where the weights go, device by device ("cuda:0: embed_tokens + layers 0-13"), as the
        # loader's device_map places them (engine.placement).
        self.placement_label = WrapLabel("")
        self.placement_label.setObjectName("placement")
        layout.addWidget(QLabel("Memory estimate"))
        layout.addWidget(self.verdict_label)
        layout.addLayout(grid)
        layout.addWidget(self.placement_label)

    def show_estimate(self, result) -> None:
        """``result``: an ``engine.memory`` estimate for one model, dtype, device and batch."""
        values = {"Weights": result.weights_bytes, "KV cache": result.kv_cache_bytes,
                  "Activations": result.activation_bytes, "Reserve": result.reserve_bytes,
                  "Total needed": result.total_bytes, "Free on device": result.device_free_bytes}
        for key, value in values.items():
            self.values[key].setText(format_bytes(value))
        quantization = getattr(result, "quantization", "none")
        held = result.dtype
        if quantization in ("int8", "int4"):
            # What quantizing saves: the weights as held, beside the same weights in the dtype.
            held = f"{quantization} weights, {result.dtype} activations"
            self.values["Weights"].setText(f"{format_bytes(result.weights_bytes)} "
                                           f"(unquantized {format_bytes(result.float_weights_bytes)})")
        elif quantization == "pre-quantized":
            held = f"weights as saved, {result.dtype} activations"
        lines = result.placement_lines() if hasattr(result, "placement_lines") else []
        self.placement_label.setText("Where the layers go:\n" + "\n".join(lines) if lines else "")
        needed, free = format_bytes(result.total_bytes), format_bytes(result.device_free_bytes)
        self.set_verdict(result.verdict, f"{needed} needed of {free} free on {result.device} "
                                         f"({held}, {result.batch} × {result.context:,} tokens)")

    def set_verdict(self, verdict: str, detail: str) -> None:
        if verdict == "will-not-fit" and detail.startswith("cannot load"):
            self.placement_label.setText("")
        self.verdict_label.setText(f"{VERDICT_TEXT.get(verdict, verdict)} — {detail}")
        self.verdict_label.setProperty("verdict", verdict)
        # A dynamic property is read by the style sheet only on a re-polish.
        self.verdict_label.style().unpolish(self.verdict_label)
        self.verdict_label.style().polish(self.verdict_label)
