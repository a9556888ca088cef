"""LoadOptionsForm: the options a model is loaded with (dtype, quantization, device, context,
batch, chunk size, timeout). The ones the memory estimate depends on announce every change."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

DTYPES = ["auto", "bfloat16", "float16", "float32"]
QUANTIZATIONS = ["none", "int8", "int4", "auto"]
QUANTIZATION_TIPS = {
    "none": "weights in the dtype above",
    "int8": "weights in 8 bits (about a quarter of float32); slower per token on a CPU",
    "int4": "weights in 4 bits (about a sixth of float32); loses a little more accuracy",
    "auto": "the smallest loss that fits the device's free memory",
}


class LoadOptionsForm(QWidget):
    estimate_inputs_changed = Signal()  # dtype, device, context or batch: the estimate is stale

    def __init__(self, devices: list[str], parent=None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.dtype_box = QComboBox()
        self.dtype_box.addItems(DTYPES)
        self.quantization_box = QComboBox()
        for index, name in enumerate(QUANTIZATIONS):
            self.quantization_box.addItem(name)
            self.quantization_box.setItemData(index, QUANTIZATION_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.device_box = QComboBox()
        self.device_box.addItems(devices)
        self.context_box = QSpinBox(minimum=16, maximum=1_048_576, singleStep=256, value=2048)
        self.batch_box = QSpinBox(minimum=1, maximum=256, value=1)
        self.chunk_box = QDoubleSpinBox(minimum=1, maximum=4096, value=64, suffix=" MB")
        self.timeout_box = QSpinBox(minimum=10, maximum=86400, value=1800, suffix=" s")
        for label, widget in (("Dtype", self.dtype_box), ("Quantization", self.quantization_box),
                              ("Device", self.device_box), ("Context", self.context_box),
                              ("Batch size", self.batch_box), ("Chunk size", self.chunk_box),
                              ("Load timeout", self.timeout_box)):
            form.addRow(label, widget)
        for box in (self.dtype_box, self.quantization_box, self.device_box):
            box.currentTextChanged.connect(self.estimate_inputs_changed)
        for spin in (self.context_box, self.batch_box):
            spin.valueChanged.connect(self.estimate_inputs_changed)

    def set_devices(self, devices: list) -> None:
        """A new device list (GPUs found after launch) keeps the device chosen."""
        current = self.device_box.currentText()
        self.device_box.clear()
        self.device_box.addItems(devices)
        self.device_box.setCurrentText(current)

    def fit_context(self, context_length: int) -> None:
        """The engine caps the context at the model's own; a long one starts at 4096 tokens."""
        self.context_box.setMaximum(context_length)
        self.context_box.setValue(min(context_length, 4096))

    def fit_quantization(self, entry) -> None:
        """The quantization a model starts with: a GGUF file keeps its precision class (Q8 → int8,
        Q4/Q5 → int4) instead of growing to float, and so does a folder import-gguf recorded one
        for; a checkpoint saved quantized loads as saved."""
        from engine.quantization import gguf_precision_class

        saved = getattr(entry, "quantization", None)
        self.quantization_box.setEnabled(saved is None)
        if saved is not None:
            self.quantization_box.setCurrentText("none")
            self.quantization_box.setToolTip(f"saved quantized ({saved}): loaded as it is")
            return
        self.quantization_box.setToolTip("")
        keep = gguf_precision_class(entry.dtype) if getattr(entry, "format", "") == "gguf" else None
        self.quantization_box.setCurrentText(keep or getattr(entry, "precision_class", None) or "none")

    def load_body(self, path: str) -> dict:
        """A LoadRequest body for the model at ``path``."""
        return {"path": path, "dtype": self.dtype_box.currentText(),
                "quantization": self.quantization_box.currentText(),
                "device": self.device_box.currentText(), "chunk_size_mb": self.chunk_box.value(),
                "load_timeout_s": float(self.timeout_box.value()), "max_context": self.context_box.value()}
