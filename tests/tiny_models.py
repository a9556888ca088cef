"""Tiny random models of real architectures, with a BPE tokenizer trained here and a chat template.

Real Hugging Face folders (config.json, model.safetensors, tokenizer.json, chat template), small
enough to build in a second, so every test runs against the same loading path as a real model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# DeepSeek-R1's templates open the reasoning block for the model.
REASONING_TEMPLATE = CHATML_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
assert REASONING_TEMPLATE != CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CONTEXT_LENGTH = 256

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Hello there, how are you today? I am fine, thank you very much.",
    "def add(a, b):\n    return a + b\n",
    "Café, naïve, résumé, Zürich, São Paulo, Kraków.",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 🙂 🚀 🎉 👍🏽 — and some math: ∑ x² ≤ ∞.",
    "<think>Let me reason step by step.</think> The answer is 42.",
    "Large language models generate text one token at a time.",
]


def train_tokenizer(out_dir: Path, vocab_size: int = 400):
    """Train a byte-level BPE tokenizer and save it as a transformers tokenizer in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=CONTEXT_LENGTH,
    )
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def _config(arch: str, vocab_size: int, eos_id: int, pad_id: int, **overrides):
    from transformers import DeepseekV3Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH,
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None, tie_word_embeddings=False,
    )
    common.update(overrides)
    if arch == "llama":
        return LlamaConfig(**{"num_key_value_heads": 2, **common})
    if arch == "qwen2":
        return Qwen2Config(**{"num_key_value_heads": 2, **common})
    if arch == "deepseek_v3":
        # MLA (compressed KV, K and V heads of different dims) and MoE, as in DeepSeek-V3/R1.
        return DeepseekV3Config(**{
            "num_key_value_heads": 4, "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2,
            "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
            "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
            **common,
        })
    raise ValueError(f"unknown architecture {arch!r}")


def build_model(arch: str, out_dir: Path, tokenizer_dir: Path, seed: int = 0, max_shard_size: str = "5GB",
                **overrides) -> Path:
    """Save a random ``arch`` model with the tokenizer from ``tokenizer_dir`` into ``out_dir``.

    Args:
        overrides: config fields to change (a longer context, more layers …).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = _config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init gives near-uniform logits; a wider spread makes greedy choices stable.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, min(0.2, param.shape[-1] ** -0.5 * 3))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def with_template(src: Path, out_dir: Path, template: str | None) -> Path:
    """Copy a model folder with another chat template (None: none at all)."""
    shutil.copytree(src, out_dir)
    jinja = out_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    config_file.write_text(json.dumps(config, indent=2))
    return out_dir
