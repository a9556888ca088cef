#!/bin/sh
# llama.cpp server: 8 slots of 4096 tokens
# exported by deepseek-engine 0.1.0 on 2026-11-30T12:00:00Z from sweep tests/data/export/sweep.json point 1
# model: SmolLM2-135M-Instruct · path /models/SmolLM2-135M-Instruct.gguf · fingerprint sha256:0123456789abcdef01234567
# source measured/recorded: 2026-11-30T12:00:00Z
# sweep point #1: batching.max_batch_size=8, batching.max_wait_ms=0 · concurrency 4 · 52.5 output tok/s · p99 e2e 1.250 s
# not mapped, or mapped to the nearest setting:
#   - batching.mode: dynamic: llama.cpp's slots batch continuously
#   - cache (prefix KV tiers): no RAM/disk tiers: each slot reuses its own prompt cache
#   - server.circuit: no circuit breaker
#   - context: unknown here: 4096 per slot
#   - model.dtype = auto: KV cache type f16, llama.cpp's default
#   - batching.request_timeout_s: mapped to -to, llama-server's read/write timeout in seconds
#   - batching.max_queue: no counterpart: requests wait for a free slot
#   - server.metrics_public = false: with --api-key set, llama-server guards /metrics too
#
# the API key comes from the environment: export LLAMA_API_KEY=<key>
set -eu
: "${LLAMA_API_KEY:?set LLAMA_API_KEY to the API key}"
exec llama-server -m /models/SmolLM2-135M-Instruct.gguf --host 127.0.0.1 --port 8000 -np 8 -c 32768 -cb -ctk f16 -ctv f16 --metrics -ngl 0 -to 600 --api-key "$LLAMA_API_KEY" "$@"
