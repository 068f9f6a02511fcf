"""Pages of the newest-first lists (ListStudies, ListArtifacts, ListModels): the page size a
request may ask for, and the opaque token that asks for the next page (the creation time, in
seconds, of the last item on this one)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

DEFAULT_PAGE = 50
MAX_PAGE = 500
T = TypeVar("T")


async def requested_page(request, context, rpc: str) -> tuple[int, float | None]:
    """(page size, created before) from a List request's page_size and page_token; a bad one is
    INVALID_ARGUMENT naming the field."""
    if request.page_size < 0:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size: must be >= 0")
    before = None
    if request.page_token:
        try:
            before = float(request.page_token)
        except ValueError:
            before = math.nan
        if not math.isfinite(before):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_token: not a token from {rpc}")
    return min(request.page_size or DEFAULT_PAGE, MAX_PAGE), before


def page_of(found: Sequence[T], size: int, created: Callable[[T], float]) -> tuple[list[T], str]:
    """The page (`found` holds up to size + 1, newest first) and the token for the next one."""
    page = list(found[:size])
    return page, repr(created(page[-1])) if len(found) > size else ""
