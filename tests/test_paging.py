"""The newest-first lists' paging (gateway/paging.py), shared by ListStudies, ListArtifacts and
ListModels: sizes bounded, tokens checked, the next token only when there is a next page."""
import asyncio

import grpc
import pytest

from openautoglm.gateway.paging import DEFAULT_PAGE, MAX_PAGE, page_of, requested_page
from openautoglm.v1 import studies_pb2


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code, details):
        raise _Aborted(code, details)


def _requested(**fields):
    return asyncio.run(requested_page(studies_pb2.ListStudiesRequest(**fields), _Context(), "ListStudies"))


def test_sizes_default_and_are_capped_and_a_token_reads_back():
    assert _requested() == (DEFAULT_PAGE, None)
    assert _requested(page_size=10**6) == (MAX_PAGE, None)
    assert _requested(page_size=3, page_token=repr(1765000000.25)) == (3, 1765000000.25)


@pytest.mark.parametrize("fields, field", [(dict(page_size=-1), "page_size"), (dict(page_token="garbage"), "page_token"),
                                           (dict(page_token="nan"), "page_token"), (dict(page_token="inf"), "page_token")])
def test_bad_fields_are_invalid_argument_naming_them(fields, field):
    with pytest.raises(_Aborted) as info:
        _requested(**fields)
    code, details = info.value.args
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:")


def test_the_next_token_is_the_last_items_time_only_when_more_follow():
    rows = [(30.0, "c"), (20.0, "b"), (10.0, "a")]
    assert page_of(rows, 2, lambda row: row[0]) == ([(30.0, "c"), (20.0, "b")], "20.0")
    assert page_of(rows, 3, lambda row: row[0]) == (rows, "")
