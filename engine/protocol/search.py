"""The search API's bodies: ``POST /v1/search``, ``/admin/collections…``, the ``index_progress``
event, and the ``search`` extension of chat completions with the citations it adds.

The contract the app builds against; fields may be added, never renamed or dropped.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol.response_base import ResponseModel

SearchMode = Literal["lexical", "semantic", "hybrid"]
MAX_QUERY_CHARS = 100_000  # far past any question; a body past it is a mistake, not a query


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SearchRequest(_Request):
    query: str = Field(..., max_length=MAX_QUERY_CHARS, description="any text: FTS5 syntax characters are searched as text")
    collection: Optional[str] = Field(None, description="null or absent: all collections")
    top_k: int = Field(10, ge=1, le=100)
    mode: SearchMode = "hybrid"
    path_glob: Optional[str] = Field(None, description="only files whose absolute path matches (SQLite GLOB: * ? [...])")


class Scores(ResponseModel):
    lexical: Optional[float] = Field(None, description="BM25 (higher is better); null: not found lexically")
    semantic: Optional[float] = Field(None, description="cosine similarity; null: not among the semantic candidates")


class SearchHit(ResponseModel):
    collection: str
    path: str = Field(..., description="the file's absolute path")
    title: Optional[str]
    heading: Optional[str] = Field(..., description='heading path joined with " › "')
    page: Optional[int] = Field(..., description="PDF page, 1-based")
    lines: Optional[list[int]] = Field(..., description="[start, end], 1-based, inclusive (text formats)")
    snippet: str = Field(..., description="HTML-escaped text, matching terms in <mark>…</mark>")
    score: float = Field(..., description="the ranking score of the mode used (hybrid: reciprocal-rank fusion)")
    scores: Scores


class SearchResponse(ResponseModel):
    hits: list[SearchHit]
    mode: SearchMode = Field(..., description='the mode actually used: "lexical" while semantic is not ready')
    took_ms: float


class CollectionCreate(_Request):
    name: str
    folders: list[str] = Field(..., min_length=1)
    include: list[str] = Field(default_factory=list, description="globs on the path relative to the folder, or the name")
    exclude: list[str] = Field(default_factory=list)


class CollectionUpdate(_Request):
    folders: Optional[list[str]] = Field(None, min_length=1)
    include: Optional[list[str]] = None
    exclude: Optional[list[str]] = None


class IndexProgress(ResponseModel):
    type: Literal["index_progress"] = "index_progress"
    collection: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    chunks: int
    chunks_per_s: float
    eta_s: Optional[float]
    current_file: Optional[str]
    state: Literal["indexing", "done", "failed", "cancelled"]
    problems: int
    phase: Literal["reading", "embedding"] = Field("reading", description="reading files, then embedding chunks")
    embedded: int = 0
    embed_total: int = 0


class Collection(ResponseModel):
    name: str
    folders: list[str]
    include: list[str]
    exclude: list[str]
    state: Literal["empty", "indexing", "ready", "error"]
    files: int
    chunks: int
    characters: int
    problems: int = Field(..., description="files with an error")
    semantic: Literal["ready", "pending", "off"] = Field(..., description="whether dense vectors are available")
    indexed_at: Optional[float]
    progress: Optional[IndexProgress]
    error: Optional[str] = Field(None, description="what stopped the last run, or a folder not found")
    embedded: int = Field(0, description="chunks with a vector")


class CollectionList(ResponseModel):
    collections: list[Collection]


class CollectionDeleted(ResponseModel):
    deleted: str


class IndexedFile(ResponseModel):
    path: str
    size: Optional[int]
    mtime: Optional[float]
    status: Literal["ok", "error"]
    chunks: int
    characters: int
    error: Optional[str]


class FileList(ResponseModel):
    files: list[IndexedFile]


# ---------------------------------------------------------------------------- grounded chat


class SearchOptions(_Request):
    """The ``search`` extension of ``/v1/chat/completions``: answer from a collection's passages."""

    collection: str
    top_k: int = Field(5, ge=1, le=20)
    mode: SearchMode = "hybrid"


class Citation(ResponseModel):
    n: int = Field(..., description="the source's number as the model saw it, from 1")
    collection: str
    path: str
    title: Optional[str]
    heading: Optional[str]
    page: Optional[int]
    lines: Optional[list[int]]
    snippet: str
