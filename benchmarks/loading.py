"""Loading figures (issue 3), measured in one run on the demo model, CPU:

  * peak resident memory during a load through the engine's loader, as a ratio to the weights'
    bytes (float32 and bfloat16; target <= 1.3), and after the first forward pass;
  * load time through the engine's loader (progress hook, chunked events) vs a plain
    ``from_pretrained`` of the same model (target <= 1.2x), fresh processes, alternating;
  * time to list 50 model folders with the catalog (target < 1 s).

Usage: python benchmarks/loading.py [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import demo_model  # noqa: E402

CHILD = r"""
import json, sys, threading, time
import psutil, torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
path, mode, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(path))]
from engine.config import LoadConfig, ModelConfig
from engine.runtime.loader import load_model
from transformers import AutoTokenizer
torch.ones(8) @ torch.ones(8)

def status_bytes(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def rss_anon():
    return status_bytes("RssAnon")

anon = [rss_anon()]
sampling = True
def sample():
    while sampling:
        anon.append(rss_anon())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
before, anon_before = psutil.Process().memory_info().rss, anon[0]
sampler.start()
started = time.perf_counter()
if mode == "engine":
    events = []
    model = load_model(ModelConfig(path=path, dtype=dtype), LoadConfig(chunk_size_mb=16), emit=events.append).model
else:  # the same work a user does by hand: tokenizer and model
    AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
seconds = time.perf_counter() - started
sampling = False
sampler.join()
peak_load = status_bytes("VmHWM") - before  # VmHWM, not ru_maxrss: that one carries the parent's peak
peak_anon = max(anon) - anon_before
with torch.inference_mode():
    model(torch.tensor([[1, 2, 3, 4]]))
peak_forward = status_bytes("VmHWM") - before
unique = {t.data_ptr(): t for t in model.state_dict().values()}  # tied weights count once
weights = sum(t.numel() * t.element_size() for t in unique.values())
print(json.dumps({"seconds": seconds, "peak_load": peak_load, "peak_anon": peak_anon, "peak_forward": peak_forward,
                  "weights": weights}))
"""


def child(path: Path, mode: str, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, dtype], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])



def catalog_seconds(model: Path, copies: int = 50) -> tuple[float, float]:
    from engine.catalog import scan_folders

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(copies):  # real folders: config, tokenizer, and the weights as a hard link
            folder = Path(tmp) / f"org{i % 5}" / f"model-{i}"
            folder.mkdir(parents=True)
            for f in model.iterdir():
                try:
                    (folder / f.name).hardlink_to(f)
                except OSError:
                    shutil.copy(f, folder / f.name)
        started = time.perf_counter()
        entries = scan_folders([Path(tmp)])
        in_process = time.perf_counter() - started
        assert len(entries) == copies and all(e.loadable for e in entries)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "engine", "models", "--dir", tmp, "--no-hf-cache", "--json"],
                       cwd=ROOT, check=True, capture_output=True)
        cli = time.perf_counter() - started
    return in_process, cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = args.model or demo_model()
    print(f"model: {model}")
    for dtype in ("float32", "bfloat16"):
        r = child(model, "engine", dtype)
        print(f"{dtype:9} peak RSS growth during load: {r['peak_load'] / r['weights']:.2f}x weights "
              f"({r['peak_load'] >> 20} MiB for {r['weights'] >> 20} MiB; target <= 1.30); "
              f"of it anonymous (not file pages): {r['peak_anon'] / r['weights']:.2f}x; "
              f"after the first forward: {r['peak_forward'] / r['weights']:.2f}x")
    for dtype in ("float32", "bfloat16"):
        times = {"engine": [], "plain": []}
        for _ in range(args.repeats):
            for mode in ("plain", "engine"):
                times[mode].append(child(model, mode, dtype)["seconds"])
        plain, engine = statistics.median(times["plain"]), statistics.median(times["engine"])
        print(f"{dtype:9} load time (tokenizer + model): engine {engine:.2f} s vs plain from_pretrained {plain:.2f} s "
              f"-> {engine / plain:.2f}x (target <= 1.20)")
    in_process, cli = catalog_seconds(model)
    print(f"catalog of 50 model folders: {in_process:.3f} s in process, {cli:.2f} s for the whole "
          f"`deepseek-engine models` command (target < 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
