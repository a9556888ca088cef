"""Local document search (torch-free except the embedder, which imports torch when it runs):
extract text with its structure, chunk it, keep it in SQLite (FTS5 for BM25, vectors beside it),
retrieve lexically, semantically or both fused, and ground a chat answer on numbered sources.

    extract.py    files → sections of text with heading path, page or lines
    chunking.py   sections → chunks of ~1,000 characters that keep where they came from
    store.py      the SQLite index: collections, per-file state, chunks, FTS5, embeddings
    vectors.py    a collection's embeddings as a memory-mapped float32 matrix
    embedder.py   the sentence-embedding model (transformers; mean pooling, L2 norm)
    retrieval.py  lexical / semantic / hybrid (reciprocal-rank fusion), snippets with <mark>
    prepare.py    a file to its chunks (read, hash, extract, chunk), in helper processes on large runs
    indexer.py    walks folders and keeps the index current, in the background, with progress
    grounding.py  numbered sources into the prompt, citations out of the answer
    service.py    the one object the server and the CLI hold: store, indexer, retrieval
"""
