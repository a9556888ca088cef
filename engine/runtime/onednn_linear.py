"""float32 linear layers through oneDNN on the CPU (imports torch).

``nn.Linear`` calls ATen's ``addmm``, which hands a decode step's skinny products (a few rows
against a weight of megabytes) to MKL's sgemm. On the development machine (2-core AMD EPYC)
MKL ran them on one core at ~11 GB/s whatever the thread count, while memory gives ~27 GB/s:
the demo model's 49152 x 576 output head took 10-12 ms a step, 4.7 ms through oneDNN's
``mkldnn._linear_pointwise`` (the kernel torch's own compiler uses for CPU linears), and the
30 layers' products 37 ms against 26 ms. ``model.generate`` on the demo: 17.0 → 21.6 tok/s
alone, 77.8 → 114.6 tok/s at batch 8, the same tokens. The weights are used as they are (no
packed copy), so memory does not grow and tied weights stay shared.

Only plain float32 ``nn.Linear`` modules on the CPU switch: quantized layers (torchao's tensor
subclasses, engine.runtime.int4_cpu) and bfloat16 ones (no gain measured) keep their own kernels.
``DEEPSEEK_ENGINE_CPU_LINEAR=aten`` keeps ATen's everywhere (to compare, or if a oneDNN build
misbehaves); a build without the kernel, or one whose answer differs from ATen's on a probe,
keeps ATen's and says so once in the log.
"""

from __future__ import annotations

import logging
import os
import types

import torch

log = logging.getLogger("engine.loader")

CPU_LINEAR_ENV = "DEEPSEEK_ENGINE_CPU_LINEAR"


def _onednn_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def onednn_unavailable() -> str | None:
    """Why oneDNN's linear cannot be used here (None: it can): asked for ATen's, not built in, or
    a probe product that does not match ATen's."""
    asked = os.environ.get(CPU_LINEAR_ENV, "onednn").strip().lower()
    if asked == "aten":
        return f"{CPU_LINEAR_ENV}=aten"
    if asked != "onednn":
        log.warning("%s=%s is not understood (aten or onednn): oneDNN's kernel is used", CPU_LINEAR_ENV, asked,
                    extra={"event": "cpu_linear"})
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this torch build has no oneDNN linear kernel"
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(3, 2, 64, generator=generator)
        weight, bias = torch.randn(48, 64, generator=generator), torch.randn(48, generator=generator)
        got = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        expected = torch.nn.functional.linear(x, weight, bias)
    except Exception as exc:  # a kernel that cannot run on this CPU
        return f"oneDNN's linear failed a probe: {type(exc).__name__}: {exc}"
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
        return "oneDNN's linear disagreed with ATen's on a probe"
    return None


# Projections of one input that a layer calls one after the other (Llama, Qwen2, Mistral and
# their kin: attention's q/k/v, the MLP's gate/up). Each group's weights become rows of one
# matrix (the modules keep views of their rows: nothing is copied twice) and the first call
# computes the product for all, the others take their columns: a decode step makes 4 products
# a layer instead of 7, and with passive waiting each product is a parallel region that wakes the
# second thread. The demo model's in-process batcher steps (2 threads, passive waiting): batch 1
# 59-65 -> 46 ms, batch 8 73 -> 63-65 ms, batch 32 119-122 -> 110-117 ms.
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _SharedProduct:
    """A group's fused weight and its last product, kept until the group's last member takes
    its columns (the input is held, so its id cannot be another tensor's meanwhile)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias
        self.input: torch.Tensor | None = None
        self.version = -1
        self.output: torch.Tensor | None = None

    def columns(self, x: torch.Tensor, start: int, end: int, last: bool) -> torch.Tensor:
        # Inference tensors keep no version (the layers above never change their input in place
        # between the group's calls; the version guards the tensors that have one).
        version = -1 if x.is_inference() else x._version
        if self.input is not x or self.version != version:
            self.input, self.version = x, version
            self.output = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        out = self.output[..., start:end]
        if last:
            self.input = self.output = None
        return out


def _fused_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    start, end, last = self._fused_columns
    return self._fused_product.columns(x, start, end, last)


def fuse_projections(model: torch.nn.Module) -> int:
    """Fuse FUSED_GROUPS wherever a module holds all of a group as plain float32 linears of one
    input size (biases all or none); returns how many groups were fused."""
    fused = 0
    for parent in model.modules():
        for names in FUSED_GROUPS:
            members = [getattr(parent, name, None) for name in names]
            if not all(m is not None and _switchable(m) for m in members):
                continue
            if len({m.in_features for m in members}) != 1 or len({m.bias is None for m in members}) != 1:
                continue
            weight = torch.cat([m.weight.detach() for m in members])
            bias = None if members[0].bias is None else torch.cat([m.bias.detach() for m in members])
            shared = _SharedProduct(weight, bias)
            start = 0
            for i, module in enumerate(members):
                end = start + module.out_features
                module.weight = torch.nn.Parameter(weight[start:end], requires_grad=False)
                if bias is not None:
                    module.bias = torch.nn.Parameter(bias[start:end], requires_grad=False)
                module._fused_product, module._fused_columns = shared, (start, end, i == len(members) - 1)
                module.forward = types.MethodType(_fused_forward, module)
                start = end
            fused += 1
    return fused


def _switchable(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module) is torch.nn.Linear and weight is not None and type(weight.data) is torch.Tensor
            and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and (module.bias is None or type(module.bias.data) is torch.Tensor))


def use_onednn_linear(model: torch.nn.Module) -> int:
    """Switch ``model``'s plain float32 CPU linear layers to oneDNN; returns how many switched."""
    candidates = [m for m in model.modules() if _switchable(m)]
    if not candidates:
        return 0
    reason = onednn_unavailable()
    if reason is not None:
        log.info("CPU linear layers stay on ATen's kernel: %s", reason, extra={"event": "cpu_linear"})
        return 0
    groups = fuse_projections(model)
    for module in candidates:
        if "_fused_product" not in vars(module):
            module.forward = types.MethodType(_onednn_forward, module)
    log.info("%d float32 linear layers run through oneDNN (%d groups of projections fused)", len(candidates),
             groups, extra={"event": "cpu_linear", "fused_groups": groups})
    return len(candidates)
