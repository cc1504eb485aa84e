"""KeyService on the memory store, with a clock the test moves."""

from __future__ import annotations

import pytest

from inferq.core.errors import AuthenticationFailed, InvalidRequest, NotFound
from inferq.core.keys import KeyService, hash_key
from inferq.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def keys() -> KeyService:
    store = MemoryStore()
    await store.open()
    return KeyService(store, cache_seconds=2.0, clock=Clock())


async def test_created_key_authenticates_and_only_its_hash_is_stored(keys: KeyService) -> None:
    _, secret = await keys.create(name="alice")
    assert secret.startswith("iq-") and len(secret) > 40
    assert (await keys.authenticate(secret)).tenant == "alice"
    store = keys.store
    assert isinstance(store, MemoryStore)
    ((stored_key, stored_hash),) = store.keys.values()
    assert stored_hash == hash_key(secret) and secret not in repr(stored_key)


@pytest.mark.parametrize("secret", [None, "", "iq-unknown"])
async def test_missing_or_unknown_keys_fail(keys: KeyService, secret: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        await keys.authenticate(secret)


async def test_revoking_in_this_process_takes_effect_at_once(keys: KeyService) -> None:
    _, secret = await keys.create(name="bob", tenant="acme")
    await keys.authenticate(secret)
    await keys.revoke("bob")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await keys.authenticate(secret)
    with pytest.raises(NotFound):
        await keys.revoke("nobody")


async def test_blank_name_is_refused(keys: KeyService) -> None:
    with pytest.raises(InvalidRequest):
        await keys.create(name="  ")
