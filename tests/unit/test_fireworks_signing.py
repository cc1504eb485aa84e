"""The signed-URL tokens of Fireworks datasets: bound to tenant, file, method and expiry."""

from __future__ import annotations

import base64
import json

import pytest

from inferq.api.fireworks.signing import BadToken, ExpiredToken, Grant, sign, verify

SECRET = b"s3cret"
NOW = 1_700_000_000.0
GRANT = Grant("tenant-a", "my-dataset", "input.jsonl", "PUT", int(NOW) + 600, size=42)


def test_a_token_gives_back_its_grant() -> None:
    token = sign(GRANT, SECRET)
    assert verify(token, SECRET, method="PUT", now=NOW) == GRANT
    # URL-safe: it goes into a path segment as is
    assert all(c.isalnum() or c in "-_." for c in token)


def test_a_download_grant_has_no_size() -> None:
    grant = Grant("t", "d", "BIJOutputSet.jsonl", "GET", int(NOW) + 1)
    assert verify(sign(grant, SECRET), SECRET, method="GET", now=NOW).size is None


def test_an_expired_token_is_refused() -> None:
    token = sign(GRANT, SECRET)
    with pytest.raises(ExpiredToken):
        verify(token, SECRET, method="PUT", now=GRANT.expires)


def test_a_token_is_bound_to_its_method() -> None:
    with pytest.raises(BadToken, match="signed for PUT"):
        verify(sign(GRANT, SECRET), SECRET, method="GET", now=NOW)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(BadToken):
        verify(sign(GRANT, SECRET), b"other", method="PUT", now=NOW)


@pytest.mark.parametrize("field", [0, 1, 2, 4, 5])
def test_changing_any_field_breaks_the_signature(field: int) -> None:
    payload, _, mac = sign(GRANT, SECRET).partition(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields[field] = "tenant-b" if isinstance(fields[field], str) else fields[field] + 1000
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    with pytest.raises(BadToken, match="signature"):
        verify(f"{forged}.{mac}", SECRET, method="PUT", now=NOW)


@pytest.mark.parametrize("token", ["", "abc", "abc.def", ".", "%%%.x"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(BadToken):
        verify(token, SECRET, method="PUT", now=NOW)
