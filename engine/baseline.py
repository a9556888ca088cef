"""The in-process baseline a benchmark compares a server with: plain transformers ``generate``.

It imports torch and transformers (inside the function), so only the CLI (``bench --baseline``)
and the scripts under benchmarks/ import it; the app reaches ``engine.bench`` through
``engine.tuning`` and must stay torch-free.
"""

from __future__ import annotations

import statistics
import time

from engine.bench import make_prompt


def baseline_generate(model_path: str, prompt_tokens: int, output_tokens: int, batch: int) -> dict:
    """In-process ``model.generate`` on the same model: one at a time, and a static batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    config = GenerationConfig(max_new_tokens=output_tokens, do_sample=False, eos_token_id=[],
                              pad_token_id=tokenizer.pad_token_id)
    prompts = [make_prompt(prompt_tokens, 0, i) for i in range(batch)]

    def run(texts: list[str]) -> float:
        inputs = tokenizer(texts, return_tensors="pt", padding=True)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, generation_config=config)
        return len(texts) * output_tokens / (time.perf_counter() - started)

    run(prompts[:1])  # warm-up
    return {"sequential_tokens_per_s": statistics.median(run(prompts[:1]) for _ in range(2)),
            "static_batch_tokens_per_s": run(prompts), "batch": batch}
