"""The worker's HTTP face: an app factory, routers by area, middleware, errors, response building.

Each route maps onto one ``Engine`` method; the OpenAPI document is generated from the same
pydantic models the routes send (``engine.protocol``).
"""

from __future__ import annotations

from engine.api.app import create_app

__all__ = ["create_app"]
