"""Which waiters ask other processes for a job's text (:class:`inferq.core.events.JobEvents`
over a :class:`~inferq.core.events.TextRelay`): only those that stream it. A waiter for
the job's end alone (a plain sync request) costs the relay nothing: on PostgreSQL each
want and unwant is a NOTIFY statement."""

from __future__ import annotations

from collections.abc import Callable

from inferq.core.events import JobEvents


class Relay:
    """A relay that records what the hub asks of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def start(self, deliver: Callable[[str, str], None]) -> None:
        pass

    def want(self, job_id: str) -> None:
        self.asked.append(f"want {job_id}")

    def unwant(self, job_id: str) -> None:
        self.asked.append(f"unwant {job_id}")

    def text(self, job_id: str, piece: str) -> None:
        pass

    def ended(self, job_id: str) -> None:
        pass


def hub() -> tuple[JobEvents, Relay]:
    events, relay = JobEvents(), Relay()
    events.relay = relay
    return events, relay


async def test_a_waiter_for_the_end_alone_asks_no_process_for_text() -> None:
    events, relay = hub()
    sub = events.subscribe("job-1", finished=True, text=False)
    events.relayed_text("job-1", "a piece generated here")  # still delivered to it
    assert await sub.next(1) == "a piece generated here"
    sub.close()
    assert relay.asked == []


async def test_the_first_streamer_wants_the_text_and_the_last_one_lets_go() -> None:
    events, relay = hub()
    waiter = events.subscribe("job-1", text=False)
    first = events.subscribe("job-1")
    second = events.subscribe("job-1", text=True)
    assert relay.asked == ["want job-1"]
    first.close()
    waiter.close()
    assert relay.asked == ["want job-1"]
    second.close()
    assert relay.asked == ["want job-1", "unwant job-1"]
    again = events.subscribe("job-1")
    again.close()
    assert relay.asked == ["want job-1", "unwant job-1", "want job-1", "unwant job-1"]


async def test_the_sync_paths_watch_asks_for_text_only_for_a_stream() -> None:
    from inferq.core.service import JobService
    from inferq.engines.base import ModelSpec
    from inferq.engines.registry import ModelRegistry
    from inferq.store.memory import MemoryStore

    events, relay = hub()
    jobs = JobService(
        store=MemoryStore(),
        models=ModelRegistry({"m": ModelSpec(name="m", engine="fake", context_length=512)}),
        events=events,
    )
    plain_id, plain = jobs.watch(text=False)
    stream_id, stream = jobs.watch(text=True)
    plain.close()
    stream.close()
    assert relay.asked == [f"want {stream_id}", f"unwant {stream_id}"]
    assert plain_id not in " ".join(relay.asked)
