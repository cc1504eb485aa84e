"""The supervisor of ``serve --workers N`` kills and starts again a child whose
heartbeats stopped (alive but stuck: the kernel would go on handing an API process's
socket new connections that nobody answers; a worker would hold its jobs' leases), and
leaves alone one that beats, or one not watched. A worker is watched only from its first
beat (its models may take any time to load).

The children here are small Python programs that beat as an API process does (a byte on
the pipe named by ``--heartbeat-fd``), then stop beating while staying alive.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from inferq.cli import processes
from inferq.cli.processes import Child, Supervisor

#: beats every 0.1 s for ``beats`` seconds, then sleeps on without beating; each start
#: appends a line to ``starts``
PROGRAM = """
import os, sys, time
beats, starts = float(sys.argv[1]), sys.argv[2]
with open(starts, "a") as f:
    f.write(f"{os.getpid()}\\n")
end = time.monotonic() + beats
while time.monotonic() < end:  # an unwatched child (no --heartbeat-fd) never beats
    os.write(int(sys.argv[-1]), b".")
    time.sleep(0.1)
time.sleep(600)
"""


def run_for(supervisor: Supervisor, seconds: float) -> None:
    """Run the supervisor in a thread for ``seconds``, then stop it and its children."""
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    time.sleep(seconds)
    supervisor._stopping.set()
    runner.join(30)
    assert not runner.is_alive()


def starts(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def child(tmp_path: Path, name: str, beats: float, stall_timeout: float | None) -> Child:
    return Child(
        name=name,
        argv=[sys.executable, "-c", PROGRAM, str(beats), str(tmp_path / f"{name}.starts")],
        stall_timeout=stall_timeout,
    )


def test_a_child_whose_heartbeats_stop_is_killed_and_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processes, "START_GRACE", 1.0)
    monkeypatch.setattr(processes, "RESTART_DELAY", 0.1)
    # "stuck" beats for 0.5 s, then stops; "steady" beats all along; "unwatched" never
    # beats but is not watched (no stall timeout)
    stuck = child(tmp_path, "stuck", beats=0.5, stall_timeout=0.8)
    steady = child(tmp_path, "steady", beats=600, stall_timeout=0.8)
    unwatched = child(tmp_path, "unwatched", beats=0, stall_timeout=None)
    supervisor = Supervisor([stuck, steady, unwatched])
    # run() sets SIGTERM and SIGINT handlers, which only the main thread may
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    run_for(supervisor, 5.0)
    first_started = starts(tmp_path / "stuck.starts")
    # beats 0.5 s, stuck 0.8 s later, started again: at least three starts in 5 s
    assert len(first_started) >= 3, first_started
    assert len(starts(tmp_path / "steady.starts")) == 1
    assert len(starts(tmp_path / "unwatched.starts")) == 1


def test_a_child_that_never_beats_is_stuck_only_after_the_start_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "START_GRACE", 60.0)
    silent = Child(
        name="silent", argv=[sys.executable, "-c", "import time; time.sleep(600)"], stall_timeout=1
    )
    silent.start()
    try:
        assert silent.proc is not None
        assert not silent.stuck(time.monotonic() + 30)  # still starting
        assert silent.stuck(time.monotonic() + 61)
    finally:
        assert silent.proc is not None
        silent.proc.kill()
        silent.proc.wait()
        silent.close()


def test_a_child_watched_from_its_first_beat_may_take_any_time_to_start(
    tmp_path: Path,
) -> None:
    """The worker's case: no start grace, so silence before the first beat is loading;
    silence after it is a stuck loop."""
    loading = child(tmp_path, "loading", beats=0, stall_timeout=1)
    loading.from_first_beat = True
    started = child(tmp_path, "started", beats=0.3, stall_timeout=1)
    started.from_first_beat = True
    loading.start()
    started.start()
    try:
        time.sleep(0.5)  # "started" has beaten, and stopped
        now = time.monotonic()
        assert not loading.stuck(now + 3600)
        assert not started.stuck(now)  # its beats are read here
        assert started.beat is not None
        assert started.stuck(started.beat + 1.5)
    finally:
        for c in (loading, started):
            assert c.proc is not None
            c.proc.kill()
            c.proc.wait()
            c.close()
