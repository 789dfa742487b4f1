"""The supplier feed's visibility rule: positions are readable in order, once written, never past one
still being written; a failed write leaves a gap that holds nothing back."""

from __future__ import annotations

import asyncio

from services.dispatch.store import NOTHING_TO_SHOW, FeedEntry, SupplierFeed, within_reads


def _entry(seq: int) -> FeedEntry:
    return FeedEntry(seq, f"v{seq}", b'{"cursor":%d}' % seq)


def _seqs(feed: SupplierFeed, after: int = 0) -> list[int]:
    return [e.seq for e in feed.after("alpha", after, 100)]


def test_a_position_is_readable_only_once_every_earlier_one_is_settled() -> None:
    feed = SupplierFeed()
    assert feed.reserve("alpha", 2) == [1, 2]
    assert feed.reserve("alpha", 1) == [3]
    feed.commit("alpha", [_entry(3)])
    assert _seqs(feed) == []  # 1 and 2 are still being written
    feed.commit("alpha", [_entry(1)])
    assert _seqs(feed) == [1]
    feed.abandon("alpha", [2])  # that write failed: a gap
    assert _seqs(feed) == [1, 3]
    assert _seqs(feed, after=1) == [3]
    assert feed.reserve("alpha", 1) == [4]
    assert feed.reserve("beta", 1) == [1]  # each supplier its own positions


def test_restored_entries_continue_their_positions() -> None:
    feed = SupplierFeed()
    feed.restore([("alpha", _entry(5)), ("alpha", _entry(2)), ("beta", _entry(1))])
    assert _seqs(feed) == [2, 5]
    assert feed.reserve("alpha", 1) == [6]
    assert feed.reserve("beta", 1) == [2]


async def test_a_long_poll_wakes_when_its_position_becomes_readable() -> None:
    feed = SupplierFeed()
    first, second = feed.reserve("alpha", 2)
    poll = asyncio.create_task(feed.wait("alpha", 0, timeout_s=5))
    feed.commit("alpha", [_entry(second)])
    await asyncio.sleep(0.05)
    assert not poll.done()  # the second is written, not yet readable
    feed.commit("alpha", [_entry(first)])
    await asyncio.wait_for(poll, timeout=1)
    assert _seqs(feed) == [1, 2]
    assert feed.after("alpha", 0, 1) == [_entry(1)]  # the page limit


async def test_closing_answers_parked_polls() -> None:
    feed = SupplierFeed()
    poll = asyncio.create_task(feed.wait("alpha", 0, timeout_s=30))
    await asyncio.sleep(0)
    feed.close()
    await asyncio.wait_for(poll, timeout=1)


def test_only_the_newest_changes_keep_their_json() -> None:
    feed = SupplierFeed(cached_changes=2)
    feed.reserve("alpha", 3)
    feed.reserve("~ops", 1)
    feed.commit("~ops", [FeedEntry(1, "plan", NOTHING_TO_SHOW)])  # nothing to show: never cached
    feed.commit("alpha", [_entry(1), _entry(2), _entry(3)])
    assert [e.json for e in feed.after("alpha", 0, 10)] == [None, b'{"cursor":2}', b'{"cursor":3}']
    assert feed.after("~ops", 0, 10) == []  # still hidden from readers, and still a position
    assert feed.reserve("~ops", 1) == [2]


def test_a_page_far_behind_the_cache_stops_before_more_reads_than_allowed() -> None:
    cached = [_entry(1), _entry(2)]
    # Uncached: seqs 3 and 4 come from one version document, 5 and 6 from one each.
    uncached = [FeedEntry(3, "v3", None), FeedEntry(4, "v3", None), FeedEntry(5, "v5", None)]
    page = [*cached, *uncached, FeedEntry(6, "v6", None), _entry(7)]
    assert [e.seq for e in within_reads(page, 2)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in within_reads(page, 3)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.seq for e in within_reads(cached, 1)] == [1, 2]  # cached changes cost no read
    # However small the budget, a page makes progress: at least one version is read.
    assert [e.seq for e in within_reads(page[2:], 0)] == [3, 4]
