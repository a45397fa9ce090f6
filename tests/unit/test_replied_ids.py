"""``RepliedIds``: the request ids answered recently, by which redelivered duplicates are recognised."""

from __future__ import annotations

import time

from batch_worker.amqp import RepliedIds


def test_remembers_ids_until_they_expire() -> None:
    ids = RepliedIds(ttl_s=0.05)
    ids.add("a")
    assert "a" in ids and "b" not in ids
    time.sleep(0.06)
    assert "a" not in ids and len(ids) == 0


def test_forgets_the_oldest_past_its_size() -> None:
    ids = RepliedIds(max_ids=3)
    for name in "abcd":
        ids.add(name)
    assert "a" not in ids and all(name in ids for name in "bcd") and len(ids) == 3
    ids.add("b")  # answered again: now the newest
    ids.add("e")
    assert "c" not in ids and "b" in ids
