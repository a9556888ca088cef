"""Quantized weights (torch-free): which methods exist, which this device and the installed
libraries can run, what a load will hold in memory, and the refusals that say what would work
instead. Three modules, one job each:

* ``checkpoints``: a checkpoint saved quantized (a ``quantization_config`` in its config.json:
  GPTQ, AWQ, FP8, bitsandbytes, compressed-tensors, torchao …), read and checked against the
  device and libraries; a GGUF file's precision class;
* ``plan``: what a load does (``[model] quantization = "none" | "int8" | "int4" | "auto"``):
  torchao on a CPU (and on a GPU without bitsandbytes), bitsandbytes where a CUDA GPU and the
  package are; ``auto``'s choice; the refusals;
* ``census``: the checkpoint's weights sorted by what quantization does with them, and the bytes
  each method keeps, for the memory estimate.

What is quantized (weight-only):

* every ``nn.Linear`` of the decoder: int8 per output row, or int4 in groups of 32 along the
  input (measured on the demo model: groups of 64 keep 0.73 of float32's greedy choices, groups
  of 32 0.97; with only the down projections at 32 and the rest at 64, 0.81). int4's group
  scales and zeros are computed in float32 and kept in bfloat16 (``engine.runtime.int4_cpu``);
  a layer whose shape the int4 kernels cannot pack stays in float, and so the estimate counts it;
* the input embedding and the output head (``lm_head``) in int8 per row: in a small model they are
  a fifth of the weights, and int4 there costs more agreement than it saves. A tied head shares
  the embedding's int8 table;
* nothing else: norms, biases, MoE routers and experts that transformers fuses into 3-D tensors
  (not ``nn.Linear``) stay in the load dtype.

The code that builds the transformers config and quantizes tensors lives in
``engine.runtime.quantize`` (it imports torch).
"""

from engine.quantization.census import (
    INT4_GROUP_SIZES,
    WeightCensus,
    census_from_dims,
    census_from_shapes,
    census_of,
    held_tensor_bytes,
    int4_kept_float,
    int4_packs,
    quantized_weights_bytes,
)
from engine.quantization.checkpoints import (
    PreQuantized,
    gguf_precision_class,
    package_present,
    prequantized_problem,
    read_quantization_config,
)
from engine.quantization.plan import (
    REQUESTS,
    QuantizationPlan,
    QuantizationRefused,
    available_methods,
    int4_group_size,
    plan,
)

__all__ = [
    "INT4_GROUP_SIZES", "REQUESTS", "PreQuantized", "QuantizationPlan", "QuantizationRefused", "WeightCensus",
    "available_methods", "census_from_dims", "census_from_shapes", "census_of", "gguf_precision_class",
    "held_tensor_bytes", "int4_group_size", "int4_kept_float", "int4_packs", "package_present", "plan",
    "prequantized_problem", "quantized_weights_bytes", "read_quantization_config",
]
