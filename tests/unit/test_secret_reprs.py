"""Objects that hold a credential leave it out of their repr (a log line, a traceback, a
debugger's view must not show it)."""

from __future__ import annotations

from pathlib import Path

from inferq.blobs.postgres import PostgresBlobs
from inferq.config import Settings
from inferq.core.webhooks import Claimed, Delivery, Endpoint, new_secret


def test_the_settings_keep_their_secrets_out_of_their_repr(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://inferq:db-pw@db/inferq",
        signing_key="sign-pw",
        blob_url="s3://bucket/prefix?secret_access_key=s3-pw",
        metrics_token="metrics-pw",
    )
    shown = repr(settings) + str(settings)
    assert not any(pw in shown for pw in ("db-pw", "sign-pw", "s3-pw", "metrics-pw"))
    assert settings.database_url == "postgresql://inferq:db-pw@db/inferq"


def test_the_postgres_blob_store_keeps_its_url_out_of_its_repr() -> None:
    blobs = PostgresBlobs("postgresql://inferq:s3cret-pw@db:5432/inferq")
    assert "s3cret-pw" not in repr(blobs) and "s3cret-pw" not in str(blobs)


def test_a_webhook_endpoint_and_a_claimed_delivery_keep_the_signing_secret_out() -> None:
    secret = new_secret()
    endpoint = Endpoint(
        id="we_1", tenant="t", url="https://example.com/hook", events=(), secret=secret,
        created_at=0.0,
    )  # fmt: skip
    assert secret not in repr(endpoint) and endpoint.secret == secret
    delivery = Delivery(
        id="wh_1", endpoint_id="we_1", tenant="t", event_id="evt_1", event_type="job.succeeded",
        subject_id="j", event_at=0.0,
    )  # fmt: skip
    claimed = Claimed(delivery=delivery, url=endpoint.url, secret=secret)
    assert secret not in repr(claimed)
