"""Random ids drawn from a pool of the kernel's random bytes: each is a version 4 UUID
(or 32 hex digits), none is handed out twice, in threads or in a forked child. Time-ordered
ids (version 7) and ids made from their arguments (version 8) sort by what they carry."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from multiprocessing.connection import Connection

import pytest

from inferq.core import ids


def test_ids_are_random_version_4_uuids_and_hex() -> None:
    made = [ids.new_uuid() for _ in range(3 * ids.POOL_BYTES // ids.ID_BYTES)]
    assert len(set(made)) == len(made)  # across refills of the pool
    for text in made[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    hexes = [ids.new_hex() for _ in range(1000)]
    assert len(set(hexes)) == len(hexes)
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in hexes)


def test_a_uuid_is_written_as_the_uuid_module_writes_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every value of the digits the version and variant overwrite, and random others
    drawn = [bytes([b] * 16) for b in range(256)] + [os.urandom(16) for _ in range(2000)]
    monkeypatch.setattr(ids._pool, "take", iter(drawn).__next__)
    for raw in drawn:
        assert ids.new_uuid() == str(uuid.UUID(bytes=raw, version=4))


def test_time_ordered_ids_carry_the_millisecond_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    made = []
    for _ in range(5):
        made += [ids.new_uuid7() for _ in range(100)]
        time.sleep(0.002)  # a later millisecond
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: Unix time in ms
    stamps = [uuid.UUID(text).int >> 80 for text in made]
    assert stamps == sorted(stamps)
    firsts = [made[i] for i in range(0, 500, 100)]  # one of each burst, 2 ms apart
    assert firsts == sorted(firsts)  # as text too: the store's index orders them so


def test_ordered_ids_are_the_same_for_the_same_arguments_and_sort_by_them() -> None:
    made = ids.ordered_uuid(1_765_000_000_123, "t\nbatch_1", 7)
    assert made == ids.ordered_uuid(1_765_000_000_123, "t\nbatch_1", 7)
    parsed = uuid.UUID(made)
    assert str(parsed) == made
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == 1_765_000_000_123  # the millisecond, first
    assert (parsed.int >> 30) & 0xFFFFFFFF == 7  # the number
    # in order of the millisecond, then (for one key) of the number, as text too
    lines = [ids.ordered_uuid(1_765_000_000_123, "t\nbatch_1", n) for n in (1, 2, 10, 2**32 - 1)]
    later = ids.ordered_uuid(1_765_000_000_124, "t\nbatch_0", 0)
    assert [*lines, later] == sorted([later, *lines])
    assert len({*lines, later}) == 5
    # another key of the same millisecond: other ids, its own run of them
    other = [ids.ordered_uuid(1_765_000_000_123, "t\nbatch_2", n) for n in (1, 2)]
    assert not set(other) & set(lines)
    assert sorted(lines + other) in (lines + other, other + lines)
    with pytest.raises(ValueError, match="32 bits"):
        ids.ordered_uuid(1, "k", 2**32)


def test_an_ordered_ids_parts_are_its_family_and_its_number() -> None:
    millis = 1_700_000_000_123
    family, number = ids.ordered_parts(ids.ordered_uuid(millis, "t\nb", 42)) or (0, 0)
    assert number == 42
    for n in (0, 1, 99_999, 2**32 - 1):
        assert ids.ordered_parts(ids.ordered_uuid(millis, "t\nb", n)) == (family, n)
    # another key or another millisecond is another family
    assert ids.ordered_parts(ids.ordered_uuid(millis, "t\nc", 42)) != (family, 42)
    assert ids.ordered_parts(ids.ordered_uuid(millis + 1, "t\nb", 42)) != (family, 42)
    # any other id is none
    for other in (
        ids.new_uuid7(),
        str(uuid.uuid4()),
        str(uuid.uuid5(uuid.NAMESPACE_URL, "x")),
        "batch_req_1",
        "g" * 36,
        "",
    ):
        assert ids.ordered_parts(other) is None, other


def test_threads_never_get_the_same_id() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(ids.new_hex() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [h for into in made for h in into]
    assert len(set(every)) == len(every) == 16_000


def _child(conn: Connection) -> None:
    conn.send([ids.new_hex() for _ in range(10)])
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
# Python 3.12+ warns of fork() in a process with threads (the child only draws ids)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids.new_hex()  # the pool holds bytes the parent has not handed out yet
    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=_child, args=(child,))
    process.start()
    theirs = parent.recv()
    process.join(10)
    ours = [ids.new_hex() for _ in range(10)]
    assert not set(ours) & set(theirs)
