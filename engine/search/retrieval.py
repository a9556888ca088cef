"""Retrieval: lexical (FTS5 BM25), semantic (cosine over embeddings) and hybrid (reciprocal-rank
fusion of the two), with collection and path-glob filters, and a snippet of ~200 characters around
the best match with each matching term in ``<mark>``.

Any query text is valid: the words are taken out of it and each is quoted for FTS5, so ``"``,
``*``, ``-``, ``NEAR(`` or ``:`` are searched as text, never parsed as FTS5 syntax. A query of
punctuation only has no words: lexical finds nothing (an empty list, not an error).
"""

from __future__ import annotations

import concurrent.futures
import functools
import html
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from engine.search.store import ALL_TOKEN, Store, collection_token
from engine.search.vectors import VectorCache

MODES = ("lexical", "semantic", "hybrid")
# Reciprocal-rank fusion as Cormack et al. (2009) and Elasticsearch's RRF retriever define it: k = 60,
# and each method proposes as many candidates as hits are asked for (Elasticsearch's
# rank_window_size default). Deeper lists let a chunk ranked ~30th by both methods outrank one
# the better method put first: with 50 candidates each, hybrid recall@5 on the 65 labelled
# Debian questions was 58 against semantic's 59; with top_k each, 61 (and on both random halves
# at least the better method: 30 vs 28, 31 vs 31). Not fitted: k = 1, 10 or 60 give the same 61.
RRF_K = 60
MAX_TERMS = 64
COMMON_SHARE = 0.02  # a term in more than this share of the chunks does not by itself make a match
# (unless it is one of the two rarest terms of the query), and the rarest terms together make a
# match only in as many chunks as this (see Retriever.selective_query): BM25 is computed for each
# chunk matched, ~5-10 us apiece on this CPU.
MATCH_BUDGET = 3000
# When each term is in more chunks than that, the least common is found counting up to this many.
WIDE_COUNT = 40_000
SNIPPET_CHARS = 200
_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset("""a an and are as at be by can do does for from how i if in into is it its of on or
that the this to was what when where which who why will with you your""".split())


@dataclass
class Hit:
    chunk_id: int
    collection: str
    path: str
    title: Optional[str]
    heading: Optional[str]
    page: Optional[int]
    lines: Optional[list[int]]
    text: str
    snippet: str = ""
    score: float = 0.0
    scores: dict = field(default_factory=lambda: {"lexical": None, "semantic": None})

    def public(self) -> dict:
        """The hit as the API and the CLI show it (the chunk's full text stays inside)."""
        return {"collection": self.collection, "path": self.path, "title": self.title, "heading": self.heading,
                "page": self.page, "lines": self.lines, "snippet": self.snippet, "score": self.score,
                "scores": self.scores}


@dataclass
class SearchResult:
    hits: list[Hit]
    mode: str
    took_ms: float


def query_terms(query: str) -> list[str]:
    """The words of ``query``, lowercased, in order, once each; stop words dropped unless only
    stop words were given."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query) if len(w) <= 64))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_TERMS]


def fts_query(terms: Sequence[str]) -> Optional[str]:
    # Each term quoted: inside quotes FTS5 reads nothing as an operator (\w has no quote in it).
    return " OR ".join(f'"{t}"' for t in terms) if terms else None


class Retriever:
    """Searches one ``Store``; ``embed`` turns query texts into L2-normalised vectors (None: no
    semantic search)."""

    def __init__(self, store: Store, vectors: VectorCache,
                 embed: Optional[Callable[[list[str]], np.ndarray]] = None,
                 embed_available: Callable[[], bool] = lambda: True):
        self.store, self.vectors, self.embed = store, vectors, embed
        self.embed_available = embed_available
        self._totals: dict[str, tuple[int, int]] = {}  # collection -> (vectors generation, chunks)

    def semantic_ready(self, collections: Sequence[str]) -> bool:
        return (self.embed is not None and self.embed_available()
                and any(len(self.vectors.get(c)) for c in collections))

    def search(self, query: str, collections: Sequence[str], top_k: int = 10, mode: str = "hybrid",
               path_glob: Optional[str] = None) -> SearchResult:
        started = time.perf_counter()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        terms = query_terms(query)
        used = mode if mode == "lexical" or self.semantic_ready(collections) else "lexical"
        # Hybrid: the semantic half (embedding the query with torch, then numpy over the vectors)
        # runs beside the lexical half (SQLite); all three release the GIL.
        beside = _SEMANTIC.submit(self.semantic, query, collections, top_k, path_glob) if used == "hybrid" else None
        lexical = self.lexical(terms, collections, top_k, path_glob) if used != "semantic" else []
        if beside is not None:
            semantic = beside.result()
        else:
            semantic = self.semantic(query, collections, top_k, path_glob) if used == "semantic" else []
        if used == "hybrid":
            ranked = fuse(lexical, semantic)[:top_k]
        else:
            ranked = [(cid, s) for cid, s in (lexical or semantic)][:top_k]
        lex_scores, sem_scores = dict(lexical), dict(semantic)
        rows = self.store.chunks_by_id([cid for cid, _ in ranked])
        hits = []
        for chunk_id, score in ranked:
            row = rows.get(chunk_id)
            if row is None:  # removed since the vectors were loaded
                continue
            hit = Hit(chunk_id, row["collection"], row["path"], row["title"], row["heading"], row["page"],
                      [row["line_start"], row["line_end"]] if row["line_start"] is not None else None,
                      row["text"], score=float(score),
                      scores={"lexical": _maybe(lex_scores.get(chunk_id)), "semantic": _maybe(sem_scores.get(chunk_id))})
            hit.snippet = snippet(hit.text, terms)
            hits.append(hit)
        return SearchResult(hits, used, round((time.perf_counter() - started) * 1000, 2))

    def lexical(self, terms: Sequence[str], collections: Sequence[str], limit: int,
                path_glob: Optional[str] = None) -> list[tuple[int, float]]:
        if not collections:
            return []
        match = self.selective_query(terms, collections)
        if match is None:
            return []
        # BM25 over the FTS5 table alone, the collections kept inside the MATCH; the chunks table is
        # joined only for a path filter (it must apply before the LIMIT).
        score = "bm25(chunks_fts, 1.0, 2.0, 1.0, 0.0)"
        if path_glob:
            sql = (f"SELECT chunks_fts.rowid, {score} AS score FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
                   " WHERE chunks_fts MATCH ? AND c.path GLOB ? ORDER BY score LIMIT ?")
            args: list = [match, path_glob, limit]
        else:
            sql = f"SELECT rowid, {score} AS score FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?"
            args = [match, limit]
        # bm25() is lower for better matches; the score shown is its negation (higher is better).
        return [(r[0], -r[1]) for r in self.store.conn.execute(sql, args)]

    def selective_query(self, terms: Sequence[str], collections: Sequence[str]) -> Optional[str]:
        """The FTS5 query for ``terms`` in ``collections``. FTS5 computes BM25 for every chunk that
        matches (~5-10 us each), so an OR of common words ("table", "write") scored most of the
        index. A chunk must hold one of the rare terms (in at most ``COMMON_SHARE`` of the chunks, or
        the two rarest), taken in order of rarity while the chunks they match stay within
        ``MATCH_BUDGET`` (at least the rarest one); the other terms still
        count once in the score: ``(rare OR …) AND (common OR … OR in)``, where ``in`` is a term
        of the ``every`` column that all rows searched hold (ALL_TOKEN, or the collections' own
        tokens, ANDed once more to keep the match to them; BM25 gives that column no weight).
        Terms found nowhere are left out.

        How rare a term is comes from counting its chunks up to the budget (a full count of a
        common term read its whole list: 10-50 ms at 100k chunks)."""
        conn = self.store.conn
        every = every_collection(self.store, collections)
        # ALL_TOKEN without "every :": only that column holds it, and a column filter made FTS5
        # decode its 100k-row list's positions (10 ms instead of 4 at 124k chunks).
        scope = f'"{ALL_TOKEN}"' if every else \
            "every : (" + " OR ".join(f'"{collection_token(c)}"' for c in collections) + ")"
        counts = {t: self._count_upto(f'"{t}"' if every else f'"{t}" AND {scope}', MATCH_BUDGET + 1) for t in terms}
        present = [t for t in terms if counts[t]]
        if not present:
            return None
        common_from = COMMON_SHARE * self._chunk_total(collections)
        rare: list[str] = []
        matched = 0
        for term in sorted(present, key=counts.__getitem__):  # stable: ties keep the query's order
            if len(rare) >= 2 and counts[term] > common_from or rare and matched + counts[term] > MATCH_BUDGET:
                break
            rare.append(term)
            matched += counts[term]
        if len(rare) == 1 and counts[rare[0]] > MATCH_BUDGET:  # every term is common: the least common
            wide = {t: self._count_upto(f'"{t}"' if every else f'"{t}" AND {scope}', WIDE_COUNT) for t in present}
            rare = [min(present, key=wide.__getitem__)]
        common = [t for t in present if t not in rare]
        keep = "" if every else f" AND {scope}"
        if not common:
            return f"({fts_query(present)}){keep}"
        return f"({fts_query(rare)}) AND ({fts_query(common)} OR {scope}){keep}"

    def _chunk_total(self, collections: Sequence[str]) -> int:
        """Chunks in ``collections``, counted again only for a collection that changed since."""
        total = 0
        for name, generation in self.store.conn.execute("SELECT name, vectors_generation FROM collections"):
            if name in collections:
                cached = self._totals.get(name)
                if cached is None or cached[0] != generation:
                    cached = self._totals[name] = (generation, self.store.conn.execute(
                        "SELECT count(*) FROM chunks WHERE collection = ?", (name,)).fetchone()[0])
                total += cached[1]
        return total

    def _count_upto(self, match: str, cap: int) -> int:
        return self.store.conn.execute("SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                                       (match, cap)).fetchone()[0]

    def semantic(self, query: str, collections: Sequence[str], limit: int,
                 path_glob: Optional[str] = None) -> list[tuple[int, float]]:
        if self.embed is None or not self.embed_available() or not query.strip():
            return []
        vector = self.embed([query])[0]
        found: list[tuple[int, float]] = []
        with _one_blas_thread():
            for collection in collections:
                found += self._semantic_in(collection, vector, limit, path_glob)
        found.sort(key=lambda pair: -pair[1])
        return found[:limit]

    def _semantic_in(self, collection: str, vector: np.ndarray, limit: int,
                     path_glob: Optional[str]) -> list[tuple[int, float]]:
        matrix = self.vectors.get(collection)
        if not len(matrix) or matrix.matrix.shape[1] != vector.shape[0]:
            return []  # no vectors yet, or another model's
        allowed = None
        if path_glob:
            allowed = np.fromiter((r[0] for r in self.store.conn.execute(
                "SELECT id FROM chunks WHERE collection = ? AND path GLOB ?", (collection, path_glob))), dtype=np.int64)
        return matrix.top(vector, limit, allowed)


def every_collection(store: Store, collections: Sequence[str]) -> bool:
    """Whether ``collections`` are all the index holds (no collection filter needed)."""
    return set(collections) >= {r[0] for r in store.conn.execute("SELECT name FROM collections")}


_BLAS = None
# Runs the semantic half of hybrid queries while the calling thread searches FTS5 (a few threads:
# concurrent queries do not wait for each other's half).
_SEMANTIC = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="semantic-search")


def _one_blas_thread():
    """A matrix-vector product per collection is memory-bound: BLAS's extra threads gain nothing,
    and on a busy CPU waking them cost ~10 ms a call (a hybrid query over 35 collections took
    520 ms instead of 100)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def fuse(*rankings: Sequence[tuple[int, float]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: each list adds 1 / (k + rank) for the ids it holds."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, 1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


def _maybe(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """A rough English stem, enough to mark "descaling" for "descale" (FTS5's porter stemmer
    matched it; the snippet should show why)."""
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def snippet(text: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``text`` around the densest cluster of query terms, HTML-escaped,
    each matching word in ``<mark>``; the start of the text when nothing matches."""
    stems = {_stem(t) for t in terms}
    matches = [m for m in _WORD.finditer(text) if _stem(m.group().lower()) in stems]
    if matches:
        # The first match that opens the window of 0.6 * width with the most distinct terms: one
        # pass with the window's term counts (a set per match made this 1.5 ms of a 10-hit query).
        reach = width * 0.6
        keys = [_stem(m.group().lower()) for m in matches]
        inside: dict[str, int] = {}
        best, best_count, end_index = matches[0].start(), 0, 0
        for i, m in enumerate(matches):
            while end_index < len(matches) and matches[end_index].start() < m.start() + reach:
                inside[keys[end_index]] = inside.get(keys[end_index], 0) + 1
                end_index += 1
            if len(inside) > best_count:
                best, best_count = m.start(), len(inside)
            inside[keys[i]] -= 1
            if not inside[keys[i]]:
                del inside[keys[i]]
        start = max(0, best - width // 4)
    else:
        start = 0
    end = min(len(text), start + width)
    if start > 0:  # begin at a word
        space = text.find(" ", start, min(end, start + 20))
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", max(start, end - 20), end)
        end = space if space != -1 else end
    parts, cursor = [], start
    for m in matches:
        if m.start() < start or m.end() > end:
            continue
        parts.append(html.escape(text[cursor:m.start()]))
        parts.append(f"<mark>{html.escape(m.group())}</mark>")
        cursor = m.end()
    parts.append(html.escape(text[cursor:end]))
    body = " ".join("".join(parts).split())
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")
