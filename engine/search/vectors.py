"""A collection's embeddings as one memory-mapped float32 matrix (rows L2-normalised, so a dot
product is the cosine), searched exhaustively with numpy.

Where it stops scaling: a query reads the whole matrix, ~1.5 KB per chunk at 384 dimensions. At
100k chunks that is 150 MB and a few milliseconds of matrix-vector product on one core; at a few
million chunks (several GB, past RAM on a laptop, ~100 ms a query) an approximate index (HNSW,
IVF) is the next step. The matrix file is a cache: it is rebuilt from the database's embedding
column when the collection's vectors change, and a missing or damaged file costs only a rebuild.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engine.search.store import Store

# While the indexer adds embeddings the generation changes with every batch; a matrix this young
# is kept (a search sees the vectors of a few seconds ago) instead of rebuilding per query.
REBUILD_AFTER_S = 5.0


class VectorMatrix:
    def __init__(self, ids: np.ndarray, matrix: np.ndarray, generation: int):
        self.ids, self.matrix, self.generation = ids, matrix, generation
        self.built = time.monotonic()

    def __len__(self) -> int:
        return len(self.ids)

    def top(self, query: np.ndarray, k: int, allowed: Optional[np.ndarray] = None) -> list[tuple[int, float]]:
        """The ``k`` best (chunk id, cosine) pairs; ``allowed``: chunk ids the filter lets through."""
        if len(self.ids) == 0 or k <= 0:
            return []
        # A plain ndarray view of the memmap: numpy's memmap subclass wraps every result (~0.3 ms a call).
        scores = np.asarray(self.matrix) @ query.astype(np.float32)
        if allowed is not None:
            scores = np.where(np.isin(self.ids, allowed), scores, -np.inf)
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best])]
        return [(int(self.ids[i]), float(scores[i])) for i in best if np.isfinite(scores[i])]


class VectorCache:
    """One matrix per collection, kept in memory-mapped files under ``folder``."""

    def __init__(self, store: Store, folder: Path):
        self.store, self.folder = store, Path(folder)
        self._lock = threading.Lock()
        self._matrices: dict[str, VectorMatrix] = {}

    def get(self, collection: str) -> VectorMatrix:
        generation = self.store.vectors_generation(collection)
        with self._lock:
            cached = self._matrices.get(collection)
            if cached is not None and (cached.generation == generation
                                       or time.monotonic() - cached.built < REBUILD_AFTER_S):
                return cached
            matrix = self._load_or_build(collection, generation)
            self._matrices[collection] = matrix
            return matrix

    def forget(self, collection: str) -> None:
        with self._lock:
            self._matrices.pop(collection, None)
        for path in self._files(collection):
            path.unlink(missing_ok=True)

    def _files(self, collection: str) -> list[Path]:
        # "docs" must not take "docs-old"'s files: after the name comes the generation's digits.
        return [p for p in self.folder.glob(f"{collection}-*")
                if p.name[len(collection) + 1:].split(".")[0].isdigit()]

    def _load_or_build(self, collection: str, generation: int) -> VectorMatrix:
        base = str(self.folder / f"{collection}-{generation}")
        ids_path, matrix_path = Path(base + ".ids.npy"), Path(base + ".f32")
        try:
            ids = np.load(ids_path)
            dims = matrix_path.stat().st_size // 4 // max(len(ids), 1)
            matrix = np.memmap(matrix_path, dtype=np.float32, mode="r", shape=(len(ids), dims)) if len(ids) else \
                np.zeros((0, 0), np.float32)
            return VectorMatrix(ids, matrix, generation)
        except (OSError, ValueError):
            pass
        ids, matrix = self.store.all_embeddings(collection)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self._files(collection):
            old.unlink(missing_ok=True)
        if len(ids):
            tmp = Path(base + ".tmp")
            matrix.tofile(tmp)
            os.replace(tmp, matrix_path)
            tmp_ids = Path(base + ".ids-tmp.npy")
            np.save(tmp_ids, ids)
            os.replace(tmp_ids, ids_path)
            matrix = np.memmap(matrix_path, dtype=np.float32, mode="r", shape=matrix.shape)
        return VectorMatrix(ids, matrix, generation)
