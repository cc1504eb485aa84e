"""Redundant execution on the SQL stores: the scenarios of tests/unit/test_node_replicas.py
that lean on the store (claims, leases held long, fenced completes, sibling reads, list
filters) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.store.sqlite import SQLiteStore
from tests.support.postgres import postgres_store
from tests.unit import test_node_replicas as scenarios
from tests.unit.test_node_replicas import World


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "postgres":
        async with postgres_store() as pg:
            w = World(pg)
            yield w
            await w.work.close()
        return
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    w = World(store)
    yield w
    await w.work.close()
    await store.close()


async def test_the_majority_answer_wins(world: World) -> None:
    await scenarios.test_each_node_gets_one_child_and_the_majority_answer_wins(world)


async def test_no_second_child_after_a_restart(world: World) -> None:
    await scenarios.test_a_restarted_server_still_hands_a_node_no_second_child(world)


async def test_no_attempts_used_while_waiting(world: World) -> None:
    await scenarios.test_the_job_waits_for_its_children_without_using_up_attempts(world)


async def test_a_vanished_nodes_child(world: World) -> None:
    await scenarios.test_a_vanished_nodes_child_goes_to_a_node_that_ran_none(world)


async def test_the_sweep_decides(world: World) -> None:
    await scenarios.test_a_decision_lost_to_a_crash_is_taken_by_the_sweep(world)


async def test_the_sweep_inserts_children(world: World) -> None:
    await scenarios.test_the_sweep_inserts_the_children_a_crash_left_out(world)


async def test_cancelled(world: World) -> None:
    await scenarios.test_the_children_of_a_cancelled_job_are_not_run(world)
