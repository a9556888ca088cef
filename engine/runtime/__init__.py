"""The part of the engine that imports torch; only the worker process loads it."""

from engine.runtime.noise import install_noise_filter

install_noise_filter()  # before anything here imports transformers, which imports torchao
