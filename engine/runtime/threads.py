"""How torch's CPU threads wait between parallel regions (no torch: read before it loads).

The worker shares its cores with its own event loop (every streamed token is an HTTP event),
with clients on the same machine and, on a desktop, with everything else. torch's OpenMP threads
by default spin for a while after each parallel region; while another thread holds a core, the
spinning one and the one it waits for trade the core back and forth, and a decode step takes many
times longer (measured on a loaded 2-core machine: batch 8 steps of 0.4 s passive vs 2.9-6.3 s
spinning; a served stream at concurrency 1 9.7 vs 2.3 tok/s). Passive waiting puts the threads to
sleep at once. libgomp reads the setting when it loads, with torch: it must be in the environment
before that; an explicit ``OMP_WAIT_POLICY`` (ACTIVE to spin) is kept.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set already; False when torch is already loaded
    (too late to take effect) or the variable was set by the user."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
