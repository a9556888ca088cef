"""Library start-up lines that mean nothing here, kept out of the worker's JSON log (no torch)."""

from __future__ import annotations

import logging


class TorchaoStartupNoise(logging.Filter):
    """Drops the lines torchao's import logs where they mean nothing, counting them.

    torchao's wheel carries CUDA-only kernel libraries (CUTLASS for Hopper, MXFP8) and loads each
    at import: on a CPU-only torch every one fails with a warning, and torch warns about an Enum
    torchao registers. transformers imports torchao whenever it is installed (any model load), so
    these would land in every worker's log; the CPU int8/int4 paths run on ATen's own kernels and
    need none of them. The first quantized load says so once, as one info line.
    """

    failed_libraries = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Failed to load") and "torchao" in message:
            type(self).failed_libraries += 1
            return False
        return "is an Enum subclass and is now natively supported" not in message


def install_noise_filter() -> None:
    """Before transformers is imported (engine.runtime's import does it)."""
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TorchaoStartupNoise) for f in logger.filters):
            logger.addFilter(TorchaoStartupNoise())
