"""Run in a subprocess by test_memory: the real memory growth of a load plus one prefill.

Prints JSON: ``peak_growth_bytes`` (the kernel's peak RSS minus the RSS before loading) and the
engine's estimate for the same model, dtype, batch and context.
"""

import json
import sys

import psutil
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from engine.catalog import inspect_folder
from engine.memory import estimate



def peak_rss() -> int:
    """VmHWM: this process's own peak. (ru_maxrss is not: Linux carries the parent's peak
    across fork and exec, so a child of a big pytest process would report the parent's.)"""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


path, batch, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Python modules and torch's lazy start-up are not the model's memory: import and touch them first.
MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(path))]
torch.ones(8) @ torch.ones(8)
before = psutil.Process().memory_info().rss
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
cache = DynamicCache(config=model.config)
with torch.inference_mode():
    model(torch.randint(3, 300, (batch, context)), past_key_values=cache, use_cache=True, logits_to_keep=1)
peak = peak_rss()
print(json.dumps({"peak_growth_bytes": peak - before,
                  "estimate": estimate(inspect_folder(path), "float32", batch, context).as_dict()}))
