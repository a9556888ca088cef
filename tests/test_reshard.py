"""deepseek-engine reshard: bounded shards, same weights, same outputs."""

import json
import subprocess
import sys

from engine.catalog import inspect_folder
from engine.safetensors_meta import read_header
from helpers import ROOT


def test_reshard_bounds_shards_and_keeps_the_model(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    src = tiny_model("deepseek_v3")
    out = tmp_path / "resharded"
    result = subprocess.run([sys.executable, "-m", "engine", "reshard", str(src), "--chunk-size", "0.1", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) >= 4
    biggest_tensor = max(t.nbytes for f in shards for t in read_header(f).tensors.values())
    assert all(read_header(f).data_bytes <= max(0.1 * 2**20, biggest_tensor) for f in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in shards}
    before, after = inspect_folder(src), inspect_folder(out)
    assert after.loadable and after.params == before.params and after.shards == len(shards)
    ids = torch.tensor([[5, 6, 7, 8]])
    outputs = [AutoModelForCausalLM.from_pretrained(p).generate(ids, max_new_tokens=8, do_sample=False)
               for p in (src, out)]
    assert torch.equal(*outputs)


def test_reshard_refuses_a_broken_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "engine", "reshard", str(tmp_path), "--chunk-size", "1",
                             "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not a model folder" in result.stderr


def test_staged_folder_swaps_in_whole_or_leaves_the_old_folder(tmp_path):
    import pytest

    from engine.staging import staged_folder

    target = tmp_path / "models" / "m"
    with staged_folder(target) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("job failed")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["m"]  # no staging folder left behind
