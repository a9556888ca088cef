"""MemoryBudgetCard: the Tuning panel's memory budget, a bar and a verdict per device (Fits,
Tight, Will not fit) under the settings being edited, the largest batch and longest context that
fit, and the what-ifs a reload would change (context cap, KV dtype). It draws
``TuningModel.budgets`` and forwards the what-ifs to the model."""

from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from deepseek_desktop.state.tuning import TuningModel
from deepseek_desktop.state.tuning_budget import KV_DTYPES
from deepseek_desktop.widgets.card import Card, heading
from deepseek_desktop.widgets.memory_bar import MemoryBar
from engine.memory import format_bytes

VERDICT_TEXT = {"fits": "Fits", "tight": "Tight", "will-not-fit": "Will not fit", "unknown": "N/A"}


class MemoryBudgetCard(Card):
    def __init__(self, model: TuningModel, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent=parent)
        self.model, self.theme = model, theme
        self.bars: list[tuple[MemoryBar, QLabel]] = []
        self.bars_box = QVBoxLayout()
        self.fit_label = QLabel("")
        self.fit_label.setWordWrap(True)
        self.context_box = QSpinBox(minimum=0, maximum=1 << 22, singleStep=512)
        self.context_box.setSpecialValueText("model's")
        self.context_box.setToolTip("What-if: a context cap (model.max_context) changes only with a reload; "
                                    "the bar shows what it would take")
        self.context_box.valueChanged.connect(lambda v: self.model.set_what_if(context=v or None))
        self.kv_dtype_box = QComboBox()
        self.kv_dtype_box.addItems(list(KV_DTYPES))
        self.kv_dtype_box.setToolTip("What-if: the KV cache's dtype (estimate only)")
        self.kv_dtype_box.currentTextChanged.connect(lambda t: self.model.set_what_if(self.context_box.value(), t))
        what_if = QHBoxLayout()
        for widget in (QLabel("if context"), self.context_box, QLabel("KV dtype"), self.kv_dtype_box):
            what_if.addWidget(widget)
        what_if.addStretch(1)
        self.stack(heading("Memory budget"), self.bars_box, self.fit_label, what_if)
        self.show_budget([None])  # one bar from the start (N/A): the layout makes room for it
        model.budget_changed.connect(self.show_budget)
        self.show_budget(model.budgets)

    def show_budget(self, budgets: list) -> None:
        while len(self.bars) < len(budgets):
            bar, verdict = MemoryBar(self.theme), QLabel("")
            verdict.setObjectName("verdict")
            self.bars_box.addWidget(verdict)
            self.bars_box.addWidget(bar)
            self.bars.append((bar, verdict))
        for i, (bar, verdict) in enumerate(self.bars):
            shown = i < len(budgets)
            bar.setVisible(shown)
            verdict.setVisible(shown)
            if shown:
                verdict.setWordWrap(True)
                b = budgets[i]
                bar.set_budget(b)
                if b is None:
                    verdict.setText("Memory: N/A until a model is served")
                    continue
                spread = sum(1 for other in budgets if other is not None and other.layers) > 1
                layers = f" · {' + '.join(b.layers)}" if b.layers and spread else ""
                verdict.setText(f"{_device_name(b.device)}: {VERDICT_TEXT[b.verdict]} · needs "
                                f"{format_bytes(b.need_bytes)} of {format_bytes(b.available_bytes)}{layers}")
                verdict.setToolTip("the engine's need under the edited settings, of what other processes leave"
                                   + (f"; the layers loaded here: {' + '.join(b.layers)}" if b.layers else ""))
                verdict.setProperty("verdict", b.verdict)  # the theme colours the verdict
                verdict.style().unpolish(verdict)
                verdict.style().polish(verdict)
        self.fit_label.setText(self._fit_text(budgets))

    def _fit_text(self, budgets: list) -> str:
        kv = [b for b in budgets if b is not None and b.max_batch is not None]
        if not kv:
            return ("No model served: the budget is drawn once one is." if not self.model.engine.status.get("path")
                    else "Reading the model and the devices…")
        context = self.model.context_in_use() or 0
        batch = self.model.value("batching.max_batch_size")
        return (f"Largest batch at {context:,} tokens: <b>{min(b.max_batch for b in kv):,}</b> · longest "
                f"context at batch {batch}: <b>{min(b.max_context for b in kv):,}</b> (≈: estimated)")

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        for bar, _ in self.bars:
            bar.set_theme(theme)


def _device_name(device: str) -> str:
    return "Host RAM" if device == "cpu" else device.replace("cuda:", "GPU ")
