"""The run-time settings as the Tuning panel edits them: each one's trade-off in a sentence, what a
typed field sends, and the engine's refusal split per field. Plain Python, no widgets."""

from __future__ import annotations

from typing import Any

from engine import tuning

# One sentence on each setting's trade-off (the tooltip beside the field).
TRADE_OFFS = {
    "batching.mode": "dynamic joins requests at the next step (best on CPUs); continuous pages the KV cache "
                     "(GPUs, many users); sequential runs one at a time (lowest latency alone, lowest throughput).",
    "batching.max_batch_size": "More requests decoded together raise tokens/s until memory or compute runs out, "
                               "but every request's tokens come slower.",
    "batching.max_wait_ms": "Waiting for company fills batches (throughput) at the cost of the first token's latency.",
    "batching.max_batch_tokens": "A bigger token budget per step prefills long prompts faster but makes each step "
                                 "(and every running request's next token) slower.",
    "batching.page_size": "Bigger KV pages mean less bookkeeping but more memory wasted at the end of each request.",
    "batching.num_blocks": "More KV blocks admit more and longer requests at once, and take that memory from the rest.",
    "batching.kv_memory_share": "A bigger share of free memory for the paged KV cache admits more requests, "
                                "leaving less for everything else.",
    "batching.block_sharing": "Sharing the KV blocks of common prefixes saves memory and prefill; it costs a "
                              "little bookkeeping per step.",
    "batching.cpu_offload_gb": "Host memory for preempted requests' KV lets them resume without recomputing, "
                               "at the cost of that RAM.",
    "batching.max_queue": "A longer queue refuses fewer requests (429) but lets their waiting time grow.",
    "batching.request_timeout_s": "A shorter limit frees stuck slots sooner but cuts long generations.",
    "cache.type": "The prefix cache skips recomputing shared prompt prefixes, at the cost of RAM and disk.",
    "cache.memory_mb": "More RAM for prefix KV means more hits (lower time to first token) and less RAM for "
                       "everything else.",
    "cache.disk_mb": "A bigger disk tier keeps more prefixes across restarts, at the cost of disk space and writes.",
    "cache.dir": "Where the disk tier lives: a fast local disk makes its hits worth having.",
}


def parse_value(text: str) -> Any:
    """What a typed field sends: a number where it reads as one, empty as null (the default), the
    text itself otherwise (the engine says what it expected)."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def refusals(message: str) -> dict[str, str]:
    """The engine's refusal split per field (``batching.max_batch_size = 0: …; cache.x: …``);
    a refusal naming no field is kept under ``""``."""
    out: dict[str, str] = {}
    for piece in message.split("; "):
        name = piece.split(" ", 1)[0].rstrip(":")
        out[name if name.partition(".")[0] in tuning.RUNTIME_SECTIONS and "." in name else ""] = piece
    return out
