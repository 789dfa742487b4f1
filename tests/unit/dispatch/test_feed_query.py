"""The feed's fast path takes only queries the route would accept; everything else goes on to the
route, which answers with field paths."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from services.dispatch.feed_endpoint import FeedQuery, parse_feed_query


class RouteQuery(BaseModel):
    """What the FastAPI route declares (services/dispatch/supplier_api.py, `feed`)."""

    after: int = Field(default=0, ge=0)
    wait_s: float = Field(default=0, ge=0, le=60)
    limit: int = Field(default=100, ge=1, le=1000)


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        (b"", FeedQuery()),
        (b"after=42&wait_s=20&limit=500", FeedQuery(42, 20.0, 500)),
        (b"wait_s=0.25", FeedQuery(wait_s=0.25)),
        (b"after=1&after=7", FeedQuery(after=7)),  # the last value, like the route
        (b"after=3&unknown=x", FeedQuery(after=3)),
    ],
)
def test_well_formed_queries_take_the_fast_path(query: bytes, parsed: FeedQuery) -> None:
    assert parse_feed_query(query) == parsed


@pytest.mark.parametrize(
    "query",
    [
        b"limit=0",
        b"limit=1001",
        b"after=-1",
        b"wait_s=61",
        b"wait_s=nan",
        b"after=abc",
        b"after=",
        b"limit=1e3",
    ],
)
def test_anything_doubtful_goes_on_to_the_route(query: bytes) -> None:
    assert parse_feed_query(query) is None


@given(st.dictionaries(st.sampled_from(["after", "wait_s", "limit"]), st.text(max_size=12), max_size=3))
def test_the_fast_path_never_accepts_what_the_route_refuses(params: dict[str, str]) -> None:
    parsed = parse_feed_query(urlencode(params).encode())
    if parsed is None:
        return
    route = RouteQuery.model_validate(params)
    assert (parsed.after, parsed.wait_s, parsed.limit) == (route.after, route.wait_s, route.limit)
