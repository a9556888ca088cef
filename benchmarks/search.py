"""Search figures (issue 13), one run on this machine, each against a baseline or target measured
or stated in the same run:

- lexical indexing of a real corpus (Debian's sqlite3-doc and postgresql-doc-15 HTML manuals and
  docbook-xsl-doc-pdf's PDF reference): MB of extracted text over the wall time of the whole run
  (target >= 5), with the CPU time of all processes (the indexer and its extraction helpers), the
  HTML pages alone, each format's extraction rate, and the floor of any indexer: reading and
  decoding the same files;
- embedding throughput (chunks/s, all-MiniLM-L6-v2 on this machine's CPU) and the whole hybrid
  index time of that corpus (measured when the quality collection is the whole corpus, else
  estimated from the throughput);
- retrieval quality: recall@5 of lexical, semantic and hybrid on the 71 hand-labelled questions
  of benchmarks/data/search_questions.json (6 on the PDF, where the page must match too; hybrid
  should be >= the better of the two, on all and on each random half), on a collection of the
  labelled pages plus other pages of the same manuals up to --quality-chunks (the labelled pages
  alone are ~3,000 chunks; a 2-core CPU embeds 5-10 chunks/s, the whole corpus takes over an hour
  there); lexical recall on the whole corpus too;
- query latency p50/p95 on 100k chunks with vectors (the quality collection's chunks copied under
  other paths, their vectors with a little noise, beside the whole corpus's lexical index: a
  worst case for lexical search, every term 33 times as common), lexical (target < 50 ms) and
  hybrid (< 150 ms, query embedding included), against the same queries before the copies.

Run time: ~3 min with --embedding-cache FILE filled by an earlier run (only --embed-sample chunks
are embedded, for the rate), ~8-10 min without (3,000 chunks embedded at 5-10 chunks/s).

The corpus comes from Debian packages; without root, unpack them anywhere:
    apt-get download sqlite3-doc postgresql-doc-15 docbook-xsl-doc-pdf
    for d in *.deb; do dpkg -x "$d" ROOT; done; gunzip -k ROOT/usr/share/doc/docbook-xsl-doc-pdf/doc/reference.pdf.gz
    python benchmarks/search.py --doc-root ROOT/usr/share/doc [--embedding-cache FILE]
The embedding model: ``deepseek-engine fetch-demo`` puts it beside the demo model (or --embedding-model DIR).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.search.embedder import DEFAULT_EMBEDDING_MODEL, resolve_model  # noqa: E402
from engine.search.extract import extract, read_bytes  # noqa: E402
from engine.search.prepare import helper_count  # noqa: E402
from engine.search.service import SearchService  # noqa: E402
from engine.search.store import every_value  # noqa: E402

QUESTIONS = ROOT / "benchmarks" / "data" / "search_questions.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc-root", default="/usr/share/doc", help="where the Debian doc packages are unpacked")
    parser.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks with vectors for the latency figure")
    parser.add_argument("--quality-chunks", type=int, default=2400,
                        help="chunks of the collection the three modes are compared on (0: the whole corpus)")
    parser.add_argument("--device", default="cpu", help="where the embedding model runs (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two threads stalled a one-query "
                             "embedding for up to 1 s waiting for each other; one took 25-45 ms at the same rate of chunks/s)")
    parser.add_argument("--work", help="folder for the indexes (default: a temporary one, removed)")
    parser.add_argument("--embedding-cache", help="a .npz file of chunk vectors keyed by the SHA-1 of model and text, "
                        "read and written: a second run embeds only what changed (the chunks/s figure then "
                        "counts the chunks actually embedded, and says so)")
    parser.add_argument("--embed-sample", type=int, default=320,
                        help="with --embedding-cache: this many chunks are embedded even when cached, for the chunks/s figure")
    args = parser.parse_args()
    labels = json.loads(QUESTIONS.read_text())
    doc_root = Path(args.doc_root)
    folders = [doc_root / part for part in labels["corpus"]]
    missing = [str(f) for f in folders if not f.exists()]
    if missing:
        print("missing corpus parts: " + ", ".join(missing) + "\n" + __doc__.split("The corpus comes")[1], file=sys.stderr)
        return 1
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="search-bench-"))
    try:
        model = resolve_model(args.embedding_model)
        import torch

        torch.set_num_threads(args.threads)
        print(f"torch threads: {args.threads}; embedding device: {args.device}")
        service = SearchService(work / "index", str(model), device=args.device)
        cache = EmbeddingCache(Path(args.embedding_cache), str(model), service, args.embed_sample) \
            if args.embedding_cache else None
        pdfs = [str(f) for f in folders if f.is_file()]
        service.store.create_collection("debian", [str(f if f.is_dir() else f.parent) for f in folders],
                                        include=["*.html", "*.htm"] + [Path(p).name for p in pdfs])
        lexical_s = lexical_figures(service, folders)
        lexical_recall(service, labels, doc_root)
        quality = make_quality_collection(service, labels, doc_root, args.quality_chunks)
        embedding_figures(service, quality, lexical_s, cache)
        quality_figures(service, quality, labels, doc_root)
        latency_figures(service, quality, labels, args.chunks)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def corpus_files(service: SearchService) -> list[Path]:
    from engine.search.indexer import discover

    spec = service.store.collection("debian")
    return [Path(f.path) for f in discover(spec["folders"], spec["include"], spec["exclude"])[0]]


def lexical_figures(service: SearchService, folders: list[Path]) -> None:
    files = corpus_files(service)
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:  # the baseline: what any indexer must do (read and decode every file)
        data = read_bytes(path)
        if path.suffix != ".pdf":
            data.decode("utf-8")
    floor_s, floor_cpu = time.perf_counter() - started, time.process_time() - cpu
    html = [f for f in files if f.suffix != ".pdf"]
    spec = service.store.collection("debian")
    # In an index of its own: deleting it from the main one would leave FTS5 merging its
    # deletions into the next run's segments.
    html_only = SearchService(service.store.folder.parent / "html-only", "")
    html_only.store.create_collection("html-only", spec["folders"], include=["*.html", "*.htm"])
    html_summary, html_wall, html_cpu = _timed_index(html_only, "html-only")
    html_only.store.close()
    summary, wall, cpu = _timed_index(service, "debian")
    mb = summary.characters / 1e6
    print(f"corpus: {len(files)} files, {summary.bytes_done / 1e6:.1f} MB on disk, {mb:.1f} MB of extracted text, "
          f"{summary.chunks} chunks, {len(summary.problems)} problems; extraction in {helper_count()} helper process(es)")
    print(f"lexical indexing (MB of extracted text over the wall time of the whole run, PDF included): {wall:.1f} s wall "
          f"({mb / wall:.2f} MB/s), {cpu:.1f} s CPU of all processes ({mb / cpu:.2f} MB/s of CPU time); "
          f"target >= 5 MB/s: {mb / wall / 5:.2f}x (wall)")
    html_mb = html_summary.characters / 1e6
    print(f"  the {len(html)} HTML pages alone ({html_mb:.1f} MB of text): {html_wall:.1f} s wall ({html_mb / html_wall:.2f} MB/s, "
          f"{html_mb / html_wall / 5:.2f}x the target), {html_cpu:.1f} s CPU; the PDF's {mb - html_mb:.2f} MB of text: "
          f"see its extraction rate below")
    print(f"  baseline, reading + decoding the same files: {floor_s:.2f} s wall, {floor_cpu:.2f} s CPU; indexing costs "
          f"{wall / max(floor_s, 1e-9):.0f}x that")
    per_format: dict[str, list[float]] = {}
    for path in files[:: max(1, len(files) // 400)] + [f for f in files if f.suffix == ".pdf"]:
        cpu0 = time.process_time()
        document = extract(path)
        per_format.setdefault(path.suffix, [0.0, 0.0])
        per_format[path.suffix][0] += document.characters / 1e6
        per_format[path.suffix][1] += time.process_time() - cpu0
    print("  text extraction alone (CPU): " + ", ".join(f"{ext} {mb_ / max(s, 1e-9):.1f} MB/s"
                                                        for ext, (mb_, s) in sorted(per_format.items())))
    return wall


def _timed_index(service: SearchService, name: str):
    """(summary, wall s, CPU s of this process and of the extraction helpers) of a lexical index run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.perf_counter(), time.process_time()
    summary = service.index(name, embed=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # helpers are waited for when a run ends
    cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary, wall, cpu


def make_quality_collection(service: SearchService, labels: dict, doc_root: Path, budget: int) -> str:
    """The labelled pages, then every other page in a fixed order, until ``budget`` chunks."""
    if budget <= 0:
        return "debian"
    pages = {str(doc_root / p) for q in labels["questions"] for p in q["pages"]}
    sizes = {f["path"]: f["chunks"] for f in service.store.files("debian")}
    chosen = [p for p in sorted(pages) if p in sizes]
    total = sum(sizes[p] for p in chosen)
    others = sorted(p for p in sizes if p not in pages)
    others = others[::7] + [p for i, p in enumerate(others) if i % 7]  # spread over both manuals first
    for path in others:
        if total + sizes[path] > budget:
            continue
        chosen.append(path)
        total += sizes[path]
    spec = service.store.collection("debian")
    service.store.create_collection("quality", spec["folders"], include=[str(Path(p).relative_to(f))
                                    for p in chosen for f in spec["folders"] if p.startswith(f + "/")])
    summary = service.index("quality", embed=False)
    print(f"quality collection: {summary.indexed} pages ({len(pages)} labelled), {summary.chunks} chunks")
    return "quality"


def lexical_recall(service: SearchService, labels: dict, doc_root: Path) -> None:
    questions = labels["questions"]
    found = [recall_at(service.search(q["q"], "debian", top_k=5, mode="lexical").hits, q, doc_root)
             for q in questions]
    print(f"lexical recall@5 on the whole corpus: {sum(found) / len(found):.2f} ({sum(found)} of {len(found)})")


class EmbeddingCache:
    """Chunk vectors of earlier runs (``--embedding-cache``): ``service.encode`` looks each text
    up by the SHA-1 of model and text and embeds only the others."""

    def __init__(self, path: Path, model: str, service: SearchService, sample: int):
        self.path, self.model = path, model
        self.embedded, self.seconds = 0, 0.0  # chunks the model embedded, and the time it took
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as saved:
                self.vectors = dict(zip(saved["keys"].tolist(), saved["vectors"]))
        encode = service.encode

        def cached_encode(texts: list[str]) -> np.ndarray:
            keys = [hashlib.sha1(f"{model}\0{t}".encode()).hexdigest() for t in texts]
            # The first ``sample`` chunks are embedded even when cached: the chunks/s figure.
            missing = [i for i, k in enumerate(keys) if k not in self.vectors or self.embedded + i < sample]
            if missing:
                started = time.perf_counter()
                for i, vector in zip(missing, encode([texts[i] for i in missing])):
                    self.vectors[keys[i]] = vector
                self.seconds += time.perf_counter() - started
                self.embedded += len(missing)
            return np.stack([self.vectors[k] for k in keys])

        service.encode = cached_encode

    def save(self) -> None:
        keys = list(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)


def embedding_figures(service: SearchService, collection: str, lexical_s: float, cache) -> None:
    started = time.perf_counter()
    service.embedder()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    summary = service.index(collection)  # files unchanged: only the embedding pass runs
    embed_s = time.perf_counter() - started
    computed = summary.embedded if cache is None else cache.embedded
    whole = service.store.stats("debian")["chunks"]
    if cache is not None:
        cache.save()
        print(f"embedding cache {cache.path}: {summary.embedded - computed} of {summary.embedded} chunks from it, "
              f"{computed} embedded (the rate below: those, over the model's own time)")
        embed_s = cache.seconds
    if computed < 64:
        print(f"embedding: {computed} chunks embedded, too few for a rate (give --embed-sample)")
        return
    rate = computed / embed_s
    print(f"embedding ({service.embedder().name}, {service.device}): model load {load_s:.1f} s; {computed} chunks "
          f"in {embed_s:.0f} s = {rate:.1f} chunks/s")
    kind = "measured" if collection == "debian" else "estimated from that rate"
    print(f"  whole hybrid index of the corpus ({whole} chunks), {kind}: {lexical_s + whole / rate:.0f} s "
          f"(lexical {lexical_s:.0f} s + embedding {whole / rate:.0f} s)")


def recall_at(hits, question: dict, doc_root: Path, k: int = 5) -> bool:
    """One of the first ``k`` hits from one of the question's pages (for a PDF: one of its pdf_pages)."""
    wanted = {str(doc_root / p) for p in question["pages"]}
    pdf_pages = set(question.get("pdf_pages", ()))
    return any(h.path in wanted and (not pdf_pages or h.page in pdf_pages) for h in hits[:k])


def quality_figures(service: SearchService, collection: str, labels: dict, doc_root: Path) -> None:
    questions = labels["questions"]
    found = {}
    for mode in ("lexical", "semantic", "hybrid"):
        hits = [service.search(q["q"], collection, top_k=5, mode=mode).hits for q in questions]
        found[mode] = [recall_at(h, q, doc_root) for h, q in zip(hits, questions)]
    best = max(sum(found["lexical"]), sum(found["semantic"]))
    print(f"recall@5 on {len(questions)} labelled questions: " + ", ".join(
        f"{mode} {sum(v) / len(v):.2f} ({sum(v)})" for mode, v in found.items())
        + f"; hybrid vs the better of the two: {sum(found['hybrid']) / max(best, 1):.2f}x")
    # The fusion's settings were chosen on these questions' rankings: each random half must hold too.
    order = np.random.default_rng(0).permutation(len(questions))
    for name, half in (("half A", order[: len(order) // 2]), ("half B", order[len(order) // 2:])):
        counts = {mode: sum(found[mode][i] for i in half) for mode in found}
        print(f"  {name} ({len(half)}): lexical {counts['lexical']}, semantic {counts['semantic']}, hybrid "
              f"{counts['hybrid']}: {counts['hybrid'] / max(counts['lexical'], counts['semantic'], 1):.2f}x the better")
    pdf = [i for i, q in enumerate(questions) if q.get("pdf_pages")]
    if pdf:
        print(f"  on the PDF ({len(pdf)} questions, the page must match): " + ", ".join(
            f"{mode} {sum(found[mode][i] for i in pdf)}" for mode in found))
    misses = [q["q"] for q, ok in zip(questions, found["hybrid"]) if not ok]
    if misses:
        print("  hybrid misses: " + " | ".join(misses[:8]) + (" …" if len(misses) > 8 else ""))


def latency_figures(service: SearchService, collection: str, labels: dict, target_vectors: int) -> None:
    queries = [q["q"] for q in labels["questions"]]
    base = _latencies(service, queries)
    real = service.store.stats(collection)["embedded"]
    before = sum(service.store.stats(c["name"])["chunks"] for c in service.store.collections())
    copies = max(0, -(-(target_vectors - real) // max(real, 1)))
    _synthesize(service, collection, copies)
    total = sum(service.store.stats(c["name"])["chunks"] for c in service.store.collections())
    vectors = sum(service.store.stats(c["name"])["embedded"] for c in service.store.collections())
    big = _latencies(service, queries)
    for mode, target in (("lexical", 50), ("hybrid", 150)):
        p50, p95 = big[mode]
        print(f"query {mode} over all collections, {total} chunks ({vectors} with vectors): p50 {p50:.1f} ms, "
              f"p95 {p95:.1f} ms (target < {target} ms: {p95 / target:.2f} of it); before the copies "
              f"({before} chunks, {real} vectors) p95 {base[mode][1]:.1f} ms")
    dims = service.vectors.get(collection).matrix.shape[1]
    print(f"vectors: {vectors} x {dims} float32 = {vectors * dims * 4 / 1e6:.0f} MB memory-mapped; exhaustive numpy search")


def _latencies(service: SearchService, queries: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in ("lexical", "hybrid"):
        service.search(queries[0], None, 10, mode)  # warm: caches, the matrix file
        times = []
        for _ in range(2):
            for query in queries:
                started = time.perf_counter()
                service.search(query, None, 10, mode)
                times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[mode] = (statistics.median(times), times[int(0.95 * (len(times) - 1))])
    return out


def _synthesize(service: SearchService, source: str, copies: int) -> None:
    """``copies`` more collections holding the real chunks under other paths, vectors with noise."""
    conn = service.store.conn
    rng = np.random.default_rng(0)
    for copy in range(copies):
        name = f"synthetic{copy}"
        service.store.create_collection(name, [f"/synthetic/{copy}"])
        with service.store.transaction() as tx:
            tx.execute("INSERT INTO files (collection, path, size, mtime, hash, title, chunks, characters, status)"
                       " SELECT ?, '/synthetic/' || ? || path, size, mtime, hash, title, chunks, characters, status"
                       " FROM files WHERE collection = ?", (name, copy, source))
            offset = tx.execute("SELECT max(id) FROM chunks").fetchone()[0]
            tx.execute("INSERT INTO chunks (id, file_id, collection, path, title, heading, page, line_start, line_end, embedding)"
                       " SELECT id + ?, file_id, ?, '/synthetic/' || ? || path, title, heading, page, line_start, line_end,"
                       " embedding FROM chunks WHERE collection = ?", (offset, name, copy, source))
            tx.execute("INSERT INTO chunks_fts (rowid, text, heading, title, every) SELECT c.id + ?, f.text, f.heading, f.title, ?"
                       " FROM chunks c JOIN chunks_fts f ON f.rowid = c.id WHERE c.collection = ?",
                       (offset, every_value(name), source))
            rows = tx.execute("SELECT id, embedding FROM chunks WHERE collection = ?", (name,)).fetchall()
            noisy = []
            for chunk_id, blob in rows:
                if blob is None:
                    continue
                vector = np.frombuffer(blob, dtype=np.float32) + rng.normal(0, 0.02, len(blob) // 4).astype(np.float32)
                noisy.append(((vector / np.linalg.norm(vector)).astype(np.float32).tobytes(), chunk_id))
            tx.executemany("UPDATE chunks SET embedding = ? WHERE id = ?", noisy)
            tx.execute("UPDATE collections SET embed_model = (SELECT embed_model FROM collections WHERE name = ?),"
                       " vectors_generation = vectors_generation + 1 WHERE name = ?", (source, name))
    conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")


if __name__ == "__main__":
    sys.exit(main())
