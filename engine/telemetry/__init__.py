"""Telemetry without widgets and without torch: GPU (NVML), host (psutil) and engine (/metrics)
samplers, and the ring buffers the live plots and the headless recorder read from.

A value a source cannot read is ``NA`` (``None`` in snapshots, NaN in buffers, "N/A" in CSV),
never 0.
"""

NA = None
