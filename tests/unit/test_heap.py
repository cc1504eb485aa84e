"""A server process tunes its garbage collector once started; apps built for tests do not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.config import Settings
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runtime import GC_THRESHOLDS
from inferq.store.memory import MemoryStore


@pytest.fixture
def collector() -> Iterator[None]:
    """Leaves the collector as it found it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def app(tmp_path: Path, **options: bool) -> TestClient:
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=64, slots=1)}
    )
    return TestClient(
        create_app(Settings(data_dir=tmp_path), store=MemoryStore(), registry=registry, **options)
    )


def test_a_server_freezes_what_startup_built(tmp_path: Path, collector: None) -> None:
    gc.unfreeze()
    with app(tmp_path, freeze_heap=True) as client:
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == GC_THRESHOLDS
        assert client.get("/healthz").status_code == 200


def test_an_app_built_for_tests_leaves_the_collector_alone(tmp_path: Path, collector: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    with app(tmp_path) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
