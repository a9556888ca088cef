"""The part of the engine that imports torch; only the worker process loads it."""

from engine.runtime.noise import install_noise_filter
from engine.runtime.threads import prefer_passive_waiting

prefer_passive_waiting()  # before anything here imports torch, which loads OpenMP

install_noise_filter()  # before anything here imports transformers, which imports torchao
