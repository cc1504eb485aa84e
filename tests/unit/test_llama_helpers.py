"""The llama.cpp engine's pure-Python parts: the text stream (whole UTF-8 characters,
stop strings held back), the prefix match and the thread tuner."""

from __future__ import annotations

import random

import pytest

from inferq.engines.llama_text import TextStream, common_prefix
from inferq.engines.llama_threads import ThreadTuner


def feed(stream: TextStream, chunks: list[bytes]) -> list[str]:
    pieces = [stream.push(chunk) for chunk in chunks]
    pieces.append(stream.flush())
    return [p for p in pieces if p]


def test_plain_text_passes_through_piece_by_piece() -> None:
    stream = TextStream()
    assert feed(stream, [b"Hello", b",", b" world"]) == ["Hello", ",", " world"]
    assert stream.text == "Hello, world" and not stream.stopped


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    stream = TextStream()
    snowman = "☃".encode()  # three bytes
    assert stream.push(b"a" + snowman[:1]) == "a"
    assert stream.push(snowman[1:2]) == ""
    assert stream.push(snowman[2:] + b"b") == "☃b"


def test_an_incomplete_character_at_the_end_is_dropped() -> None:
    stream = TextStream()
    assert feed(stream, [b"ok", "é".encode()[:1]]) == ["ok"]
    assert stream.text == "ok"


def test_a_stop_string_ends_the_text_before_it() -> None:
    stream = TextStream(("\n\n", "END"))
    pieces = feed(stream, [b"one", b" two E", b"N", b"D three"])
    assert stream.stopped
    assert stream.text == "one two "
    assert stream.stop_hit == "END"
    assert "".join(pieces) == stream.text
    assert stream.push(b"more") == ""


def test_a_possible_stop_string_is_held_back_until_it_is_not_one() -> None:
    stream = TextStream(("STOP",))
    assert stream.push(b"go ST") == "go "
    assert stream.push(b"O") == ""
    assert stream.push(b"RM") == "STORM"
    assert stream.push(b" ST") == " "
    assert stream.flush() == "ST"
    assert stream.text == "go STORM ST" and not stream.stopped
    assert stream.stop_hit is None


def test_the_earliest_stop_string_wins() -> None:
    stream = TextStream(("cd", "abcd", "b"))
    feed(stream, [b"xab", b"cd"])
    assert stream.text == "xa"
    assert stream.stop_hit == "b"


@pytest.mark.parametrize("seed", range(20))
def test_any_split_of_the_bytes_gives_the_same_text(seed: int) -> None:
    rng = random.Random(seed)
    text = "Grüße, 世界! 🙂 done. STOP here"
    data = text.encode()
    cuts = sorted(rng.sample(range(1, len(data)), 8))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    stream = TextStream(("STOP",))
    assert "".join(feed(stream, chunks)) == stream.text == "Grüße, 世界! 🙂 done. "


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [1]) == 0
    long = list(range(1000))
    for k in (0, 1, 499, 998, 999):
        other = [*long[:k], -1, *long[k + 1 :]]
        assert common_prefix(long, other) == k


def run_steps(tuner: ThreadTuner, steps: int, seconds: dict[int, float], set_to: list[int]) -> None:
    """``steps`` decode steps of 8 tokens that take ``seconds[threads]`` each."""
    for _ in range(steps):
        tuner.before(8)
        threads = set_to[-1] if set_to else tuner.most
        tuner.after(8, seconds[threads])


def test_the_tuner_drops_to_one_thread_while_that_is_faster_and_comes_back() -> None:
    set_to: list[int] = []
    tuner = ThreadTuner(set_to.append, most=2, enabled=True)
    run_steps(tuner, ThreadTuner.PROBE_EVERY * 2, {2: 0.05, 1: 0.09}, set_to)
    assert tuner.current == 2 and set_to == [1, 2]  # probed one thread, kept two
    run_steps(tuner, ThreadTuner.PROBE_EVERY * 4, {2: 0.9, 1: 0.09}, set_to)  # a busy machine
    assert tuner.current == 1 and set_to[-1] == 1
    run_steps(tuner, ThreadTuner.PROBE_EVERY * 4, {2: 0.05, 1: 0.09}, set_to)  # free again
    assert tuner.current == 2 and set_to[-1] == 2


def test_probes_that_lose_come_less_and_less_often() -> None:
    set_to: list[int] = []
    tuner = ThreadTuner(set_to.append, most=2, enabled=True)
    run_steps(tuner, ThreadTuner.PROBE_MOST * 4, {2: 0.05, 1: 0.09}, set_to)
    probes = set_to.count(1)
    assert tuner.current == 2 and 5 <= probes <= 10


def test_a_fixed_thread_count_is_never_changed() -> None:
    set_to: list[int] = []
    tuner = ThreadTuner(set_to.append, most=2, enabled=False)
    run_steps(tuner, ThreadTuner.PROBE_EVERY * 3, {2: 0.9, 1: 0.09}, set_to)
    assert set_to == [] and tuner.current == 2
