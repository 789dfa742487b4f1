"""Which Idempotency-Keys answer, when and from where (no I/O): a key answered by a change points at
its version document, any other at its stored answer; the newest answer of a key counts; answers
expire after the retention, oldest first."""

from __future__ import annotations

from services.dispatch.idempotency import Answered, AnswerIndex

DAY = 86_400.0
NOW = 1_800_000_000.0


def test_a_change_s_answer_points_at_its_version_document_and_expires_after_the_retention() -> None:
    index = AnswerIndex(DAY)
    index.add("alpha:accept-1", Answered(NOW, "123-1#000002"))
    assert index.live("alpha:accept-1", NOW + DAY - 1) == Answered(NOW, "123-1#000002")
    assert index.live("alpha:accept-1", NOW + DAY) is None  # expired, even before a sweep
    assert index.live("alpha:unknown", NOW) is None
    assert "alpha:accept-1" in index


def test_start_up_keeps_each_key_s_newest_answer_oldest_first_whatever_order_it_reads_them() -> None:
    index = AnswerIndex(DAY)
    index.restore(
        [
            ("alpha:k", Answered(NOW - DAY - 5)),  # a refusal stored whole, expired
            ("alpha:b", Answered(NOW - 10, "b#000002")),
            ("alpha:k", Answered(NOW - 20, "k#000003")),  # the key reused after its retention
            ("alpha:a", Answered(NOW - 30)),
        ]
    )
    assert index.live("alpha:k", NOW) == Answered(NOW - 20, "k#000003")
    assert [key for key, _ in index.expired(NOW + DAY - 15)] == ["alpha:a", "alpha:k"]
    assert index.live_count(NOW) == 3


def test_expiry_forgets_oldest_first_and_keeps_a_key_answered_anew() -> None:
    index = AnswerIndex(DAY)
    index.add("alpha:1", Answered(NOW))
    index.add("alpha:2", Answered(NOW + 10, "2#000002"))
    index.add("alpha:3", Answered(NOW + DAY))
    later = NOW + DAY + 10
    expired = index.expired(later)
    assert [key for key, _ in expired] == ["alpha:1", "alpha:2"]
    index.add("alpha:1", Answered(later, "1#000004"))  # answered anew while the sweep ran
    assert index.forget([key for key, _ in expired], index.cutoff(later)) == ["alpha:2"]
    assert index.live("alpha:1", later) == Answered(later, "1#000004")
    assert len(index) == 2
    assert [key for key, _ in index.expired(later + DAY)] == ["alpha:3", "alpha:1"]
