"""Prefix cache figures (issue 4), measured in one run on the demo model:

time to first token of a request sharing a ~1,000-token prefix with an earlier one, against the
same request cold (target: >= 4x lower from RAM), and after a restart of the worker, from the
disk tier (target: >= 2x lower than cold).

Usage: python benchmarks/prefix_cache.py [--model DIR] [--prefix-tokens 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

from engine.bench import make_prompt  # noqa: E402


def ttft(srv: EngineServer, model: str, prompt: str) -> tuple[float, int]:
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, prompt_tokens = None, 0
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, headers=srv.headers, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[6:])
                if data.get("choices") and first is None:
                    first = time.perf_counter() - started
                if data.get("usage"):
                    prompt_tokens = data["usage"]["prompt_tokens"]
    return first, prompt_tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    args = parser.parse_args()
    model_dir = args.model or demo_model()
    shared = make_prompt(args.prefix_tokens, args.prefix_tokens, 0)
    prompts = [shared + " " + make_prompt(24, 0, i) for i in range(1, 5)]
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {"DEEPSEEK_DESKTOP_CACHE": cache_dir}
        with EngineServer(model_dir, env=env) as srv:
            ttft(srv, model_dir.name, make_prompt(64, 0, 99))  # warm-up, no shared prefix
            cold, tokens = ttft(srv, model_dir.name, prompts[0])
            warm, _ = ttft(srv, model_dir.name, prompts[1])
            time.sleep(2)  # let the disk tier finish writing
        with EngineServer(model_dir, env=env) as srv:
            ttft(srv, model_dir.name, make_prompt(64, 0, 98))
            disk, _ = ttft(srv, model_dir.name, prompts[2])
    print(f"prompt of {tokens} tokens, ~{args.prefix_tokens} of them shared with an earlier request")
    print(f"cold:                       TTFT {cold * 1000:7.0f} ms")
    print(f"shared prefix, RAM tier:    TTFT {warm * 1000:7.0f} ms -> {cold / warm:.1f}x lower (target >= 4x)")
    print(f"after a restart, disk tier: TTFT {disk * 1000:7.0f} ms -> {cold / disk:.1f}x lower (target >= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
