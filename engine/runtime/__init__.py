"""The part of the engine that imports torch; only the worker process loads it."""
