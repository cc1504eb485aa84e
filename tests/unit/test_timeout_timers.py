"""The timers of the header and body timeouts (``timeouts._Timer``): a callback due
``delay`` seconds after the last start, on a loop clock the tests move."""

from __future__ import annotations

from collections.abc import Callable

from inferq.api.timeouts import _Timer


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The two things a _Timer asks of its loop, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.timers.append(handle)
        return handle

    def advance(self, to: float) -> None:
        """Run what the loop would run until ``to``, in order."""
        while True:
            due = [h for h in self.timers if not h.cancelled and h.when <= to]
            if not due:
                break
            first = min(due, key=lambda h: h.when)
            self.timers.remove(first)
            self.now = first.when
            first.callback()
        self.now = to

    def pending(self) -> int:
        return sum(not h.cancelled for h in self.timers)


def timer(loop: FakeLoop, calls: list[float]) -> _Timer:
    return _Timer(loop, 10.0, lambda: calls.append(loop.now))  # type: ignore[arg-type]


def test_the_timer_calls_once_its_delay_after_the_start() -> None:
    loop, calls = FakeLoop(), []
    t = timer(loop, calls)
    t.start()
    loop.advance(9.9)
    assert calls == []
    loop.advance(30)
    assert calls == [10.0]


def test_a_start_while_one_waits_changes_nothing_unless_over() -> None:
    loop, calls = FakeLoop(), []
    t = timer(loop, calls)
    t.start()
    loop.advance(4)
    t.start()
    loop.advance(30)
    assert calls == [10.0]

    loop, calls = FakeLoop(), []
    t = timer(loop, calls)
    t.start()
    loop.advance(4)
    t.start(over=True)
    loop.advance(13.9)
    assert calls == []
    loop.advance(30)
    assert calls == [14.0]
    assert loop.pending() == 0


def test_a_cancelled_timer_does_not_call_and_starts_afresh() -> None:
    loop, calls = FakeLoop(), []
    t = timer(loop, calls)
    t.start()
    loop.advance(5)
    t.cancel()
    loop.advance(12)
    assert calls == []
    t.start()
    loop.advance(21.9)
    assert calls == []
    loop.advance(40)
    assert calls == [22.0]


def test_requests_on_one_connection_make_few_loop_timers() -> None:
    loop, calls = FakeLoop(), []
    t = timer(loop, calls)
    for n in range(1000):  # a request every 10 ms, each starting and cancelling it
        loop.advance(n * 0.01)
        t.start(over=True)
        t.cancel()
    assert len(loop.timers) <= 2 and calls == []


def test_the_callback_may_start_it_again_and_close_drops_the_loop_timer() -> None:
    loop = FakeLoop()
    calls: list[float] = []

    def again() -> None:
        calls.append(loop.now)
        if len(calls) < 3:
            t.start()

    t = _Timer(loop, 10.0, again)  # type: ignore[arg-type]
    t.start()
    loop.advance(100)
    assert calls == [10.0, 20.0, 30.0]
    t.start()
    t.close()
    assert loop.pending() == 0
    loop.advance(200)
    assert calls == [10.0, 20.0, 30.0]
