"""A batch stored before batches said how their rows' ids are made reads back as using
the name-based ids (scheme 1), so validating it again after an upgrade makes the ids its
stored rows already have; a batch stored now keeps the time-ordered scheme (2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_batch


async def test_a_batch_stored_without_its_row_id_scheme_reads_as_the_name_based_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        new, _ = await store.insert_batch(make_batch("b_new"))
        old, _ = await store.insert_batch(make_batch("b_old"))
        assert new.row_ids == old.row_ids == 2
        # b_old's record as the previous version wrote it: no row_ids in its data
        conn = sqlite3.connect(path)
        with conn:
            (data,) = conn.execute("SELECT data FROM batches WHERE id = 'b_old'").fetchone()
            stripped = {k: v for k, v in json.loads(data).items() if k != "row_ids"}
            assert stripped != json.loads(data)
            conn.execute("UPDATE batches SET data = ? WHERE id = 'b_old'", (json.dumps(stripped),))
        conn.close()
        for batch_id, scheme in (("b_old", 1), ("b_new", 2)):
            stored = await store.get_batch(batch_id, tenant=None)
            assert stored is not None and stored.row_ids == scheme
    finally:
        await store.close()
