"""The error body: OpenAI's shape, for every 4xx and 5xx of every route (admin ones too)."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from engine.protocol.response_base import ResponseModel


class ErrorDetail(ResponseModel):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error, service_unavailable, timeout, server_error")
    param: Optional[str] = Field(None, description="the request field at fault, when one is")
    code: Union[str, int, None] = Field(None, description="a stable code such as model_not_found (an HTTP status"
                                                           " inside an event stream)")


class ErrorResponse(ResponseModel):
    """OpenAI's error body: every 4xx and 5xx this server sends has this shape."""

    error: ErrorDetail
