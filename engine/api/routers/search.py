"""Search routes: ``POST /v1/search`` and the collections under ``/admin/collections``.

Each maps onto ``engine.search.service.SearchService`` (made on first use from ``[search]``, so a
server that never searches opens no index). The handlers are plain functions: FastAPI runs them
in its thread pool, where SQLite and the embedder may block without stalling the event loop.
A refusal of the index (``StoreError``) reaches ``engine.api.errors``, which answers it: 404 an
unknown collection, 409 a name taken or a run going, 400 anything else.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Request

from engine.api.errors import APIError
from engine.protocol import ErrorResponse
from engine.protocol.search import (
    Collection,
    CollectionCreate,
    CollectionDeleted,
    CollectionList,
    CollectionUpdate,
    FileList,
    SearchRequest,
    SearchResponse,
)
from engine.search.service import SearchService
from engine.search.store import check_name

router = APIRouter(tags=["search"])

_SERVICE_LOCK = threading.Lock()


def _errors(**statuses: str) -> dict[int | str, dict[str, Any]]:
    return {int(status[1:]): {"model": ErrorResponse, "description": text} for status, text in statuses.items()}


BAD = "A refused value: mode, top_k, a collection name (1-64 of A-Z a-z 0-9 _ . -, not starting with '.'), folders"
UNKNOWN = "No collection of that name"


def search_service(request: Request) -> SearchService:
    """The app's one SearchService, made on first use."""
    app = request.app
    service = getattr(app.state, "search", None)
    if service is None:
        with _SERVICE_LOCK:
            service = getattr(app.state, "search", None)
            if service is None:
                engine = app.state.engine
                settings = engine.config.search
                service = SearchService(Path(settings.dir) if settings.dir else None, settings.embedding_model,
                                        publish=engine.events.publish)
                app.state.search = service
    return service


@router.post("/v1/search", response_model=SearchResponse, responses=_errors(_400=BAD, _404=UNKNOWN))
def search(body: SearchRequest, request: Request) -> SearchResponse:
    service = search_service(request)
    result = service.search(body.query, body.collection, body.top_k, body.mode, body.path_glob)
    return SearchResponse.model_validate({"hits": [h.public() for h in result.hits], "mode": result.mode,
                                          "took_ms": result.took_ms})


@router.get("/admin/collections", response_model=CollectionList)
def list_collections(request: Request) -> CollectionList:
    return CollectionList.model_validate({"collections": search_service(request).collections()})


@router.post("/admin/collections", status_code=201, response_model=Collection,
             responses=_errors(_400=BAD, _409="A collection of that name exists"))
def create_collection(body: CollectionCreate, request: Request) -> Collection:
    service = search_service(request)
    service.store.create_collection(check_name(body.name), body.folders, body.include, body.exclude)
    return Collection.model_validate(service.describe(body.name))


@router.get("/admin/collections/{name}", response_model=Collection, responses=_errors(_400=BAD, _404=UNKNOWN))
def get_collection(name: str, request: Request) -> Collection:
    return Collection.model_validate(search_service(request).describe(check_name(name)))


@router.put("/admin/collections/{name}", response_model=Collection, responses=_errors(_400=BAD, _404=UNKNOWN))
def update_collection(name: str, body: CollectionUpdate, request: Request) -> Collection:
    service = search_service(request)
    service.store.update_collection(check_name(name), body.folders, body.include, body.exclude)
    return Collection.model_validate(service.describe(name))


@router.delete("/admin/collections/{name}", response_model=CollectionDeleted, responses=_errors(_400=BAD, _404=UNKNOWN))
def delete_collection(name: str, request: Request) -> CollectionDeleted:
    search_service(request).delete(check_name(name))
    return CollectionDeleted(deleted=name)


@router.post("/admin/collections/{name}/index", status_code=202, response_model=Collection,
             responses=_errors(_400=BAD, _404=UNKNOWN, _409="The collection is being indexed already"))
def index_collection(name: str, request: Request) -> Collection:
    service = search_service(request)
    service.start_index(check_name(name))
    return Collection.model_validate(service.describe(name))


@router.get("/admin/collections/{name}/files", response_model=FileList, responses=_errors(_400=BAD, _404=UNKNOWN))
def collection_files(name: str, request: Request, status: Optional[str] = None) -> FileList:
    service = search_service(request)
    service.store.collection(check_name(name))
    if status not in (None, "ok", "error"):
        raise APIError(400, "status must be ok or error", param="status")
    return FileList.model_validate({"files": service.store.files(name, status)})
