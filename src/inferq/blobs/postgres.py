"""BlobStore in PostgreSQL: a fleet's files with no shared volume.

Bytes live in ``blob_chunks`` rows of at most ``chunk_bytes`` (1 MiB), grouped by upload;
``blobs`` maps each name to its current upload (tables: migration 0003_blobs).

* A writer sends each chunk as soon as it has one into a pending upload no name points
  at, ``write_ahead`` (2) inserts on their way at once (memory stays at a few chunks);
  each commits without waiting for its WAL flush, which the publish then waits for.
  :meth:`commit` points the name at the upload in one transaction. Readers see the old
  bytes or the new ones, never a part, and the last publish of a name wins whole.
* Chunks are stored with lz4, or uncompressed where the server lacks it (migration
  0008): PostgreSQL's default, pglz, cost an insert three to four times the server's
  CPU, on text and on incompressible bytes alike.
* The upload a name leaves (replaced or deleted) is retired, not dropped: a read that
  started before still streams it. Uploads no name points at and untouched for
  ``grace`` seconds (a crashed writer's, retired bytes) are swept, with their chunks,
  when the store opens and then at most every ``sweep_every`` seconds after a write.
* A read looks the name up once, then fetches ``read_ahead`` (4) chunks per query, the
  next ones travelling while the last are handed out; a slow download holds no
  connection between queries.

Chunk rows rather than large objects: rows go where the job tables go (dumps, logical
replication, the same permissions), deleting them needs no ``lo_unlink`` bookkeeping,
and a writer needs no transaction open for the whole upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from importlib import resources
from typing import Any

from inferq.blobs.base import CHUNK, BlobStore, BlobWriter, check_key, span
from inferq.core.errors import ConfigError, NotFound, StoreError, StoreUnavailable
from inferq.drivers.postgres import import_asyncpg, unavailable_errors

#: the size of every stored chunk but a blob's last
CHUNK_BYTES = 1 << 20
#: how long an upload no name points at is kept (a write in progress touches it)
GRACE_SECONDS = 3600.0
#: how often, at most, a process sweeps after its writes
SWEEP_EVERY = 600.0
#: chunk inserts a writer keeps on their way at once
WRITE_AHEAD = 2
#: chunks a read fetches per query (and fetches the next ones of while the last are read)
READ_AHEAD = 4
#: uploads one sweep step deletes
_SWEEP_BATCH = 100
#: names one listing query returns
_NAMES_PAGE = 1000

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load_queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("postgres.sql").read_text("utf-8")
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


log = logging.getLogger("inferq.blobs")
Q = _load_queries()


class _PostgresWriter(BlobWriter):
    def __init__(self, store: PostgresBlobs, key: str, max_bytes: int | None) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._key = key
        self._upload = uuid.uuid4().hex
        self._buffer = bytearray()
        self._chunks = 0
        self._started = False
        self._touched = 0.0
        #: chunk inserts on their way (up to the store's ``write_ahead``)
        self._sending: set[asyncio.Future[None]] = set()

    async def _start(self) -> None:
        if not self._started:
            self._touched = self._store.clock()
            await self._store.execute(Q["start_upload"], self._upload, self._touched)
            self._started = True
        elif self._store.clock() - self._touched >= self._store.grace / 10:
            # a slow upload must not look abandoned to the sweep
            self._touched = self._store.clock()
            if not await self._store.touch(self._upload):
                raise StoreError(f"the upload of blob {self._key} was abandoned and swept")

    async def _send(self, data: bytes) -> None:
        await self._start()
        self._sending.add(asyncio.ensure_future(self._add(self._chunks, data)))
        self._chunks += 1
        if len(self._sending) >= self._store.write_ahead:
            await self._settle(asyncio.FIRST_COMPLETED)

    async def _add(self, seq: int, data: bytes) -> None:
        if not await self._store.add_chunk(self._upload, seq, data):
            raise StoreError(f"the upload of blob {self._key} was abandoned and swept")

    async def _settle(self, until: str) -> None:
        """Wait for the first (or every) insert on its way; raise the first failure."""
        done, self._sending = await asyncio.wait(self._sending, return_when=until)
        for sent in done:
            sent.result()

    async def _write(self, data: bytes) -> None:
        size = self._store.chunk_bytes
        if not self._buffer:
            # whole chunks go as they came (a slice of all of ``data`` is ``data``)
            whole = len(data) - len(data) % size
            for at in range(0, whole, size):
                await self._send(data[at : at + size])
            data = data[whole:]
        self._buffer += data
        while len(self._buffer) >= size:
            with memoryview(self._buffer) as view:
                piece = bytes(view[:size])
            del self._buffer[:size]
            await self._send(piece)

    async def _commit(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        if data:
            await self._send(data)
        await self._start()
        if self._sending:
            await self._settle(asyncio.ALL_COMPLETED)
        await self._store.publish(self._key, self._upload, self.size)

    async def _discard(self) -> None:
        self._buffer = bytearray()
        for sending in self._sending:
            sending.cancel()
        if self._sending:
            await asyncio.wait(self._sending)
        self._sending = set()
        if self._started:
            # best effort: what a dead database keeps, the sweep deletes later
            with contextlib.suppress(StoreError):
                await self._store.execute(Q["drop_upload"], self._upload)


@dataclass(eq=False)
class PostgresBlobs(BlobStore):
    """Blobs in the PostgreSQL database at ``url`` (whose schema has the blob tables)."""

    #: may hold the database's password: kept out of the repr
    url: str = field(repr=False)
    _: KW_ONLY
    min_connections: int = 1
    max_connections: int = 5
    server_settings: dict[str, str] = field(default_factory=dict)
    chunk_bytes: int = CHUNK_BYTES
    write_ahead: int = WRITE_AHEAD
    read_ahead: int = READ_AHEAD
    grace: float = GRACE_SECONDS
    sweep_every: float = SWEEP_EVERY
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._asyncpg = import_asyncpg("the PostgreSQL blob store")
        self._unavailable = unavailable_errors(self._asyncpg)
        self._pool: Any = None
        #: the connections chunk inserts go through: commits that do not wait for their
        #: WAL flush (``add_chunk``)
        self._chunk_pool: Any = None
        self._swept_at = 0.0

    # -- life ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            settings = {"application_name": "inferq-blobs", **self.server_settings}
            self._pool = await self._asyncpg.create_pool(
                self.url,
                min_size=self.min_connections,
                max_size=self.max_connections,
                server_settings=settings,
            )
            self._chunk_pool = await self._asyncpg.create_pool(
                self.url,
                min_size=0,
                max_size=self.max_connections,
                server_settings={**settings, "synchronous_commit": "off"},
            )
        except (OSError, self._asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL for blobs: {exc}") from exc
        if not await self._fetchval(Q["tables_exist"]):
            await self.close()
            raise ConfigError(
                "the blob database has no blob tables: run `inferq db upgrade` with "
                "INFERQ_DATABASE_URL set to it"
            )
        await self.sweep()

    async def close(self) -> None:
        pools = (self._pool, self._chunk_pool)
        self._pool = self._chunk_pool = None
        for pool in pools:
            if pool is not None:
                await pool.close()

    # -- the port ------------------------------------------------------------------------

    def writer(self, key: str, *, max_bytes: int | None = None) -> BlobWriter:
        return _PostgresWriter(self, check_key(key), max_bytes)

    async def read(
        self, key: str, *, chunk: int = CHUNK, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        found = await self._fetchrow(Q["find"], check_key(key))
        if found is None:
            raise NotFound(f"blob {key} not found")
        upload = found["upload_id"]
        at, end = span(found["size"], start, stop)
        seq = skip = 0
        if at:
            # every chunk of an upload but its last has the first one's length
            stored = await self._fetchval(Q["chunk_length"], upload)
            if stored is None:
                raise StoreError(f"blob {key} was removed while it was read")
            seq, skip = divmod(at, stored)
        ahead: asyncio.Future[list[Any]] | None = None
        try:
            while at < end:
                rows = await (ahead or self._fetch(Q["chunks"], upload, seq, self.read_ahead))
                ahead = None
                if not rows or rows[0]["seq"] != seq or rows[-1]["seq"] != seq + len(rows) - 1:
                    # only when a read outlives the grace after a replace or delete
                    raise StoreError(f"blob {key} was removed while it was read")
                seq += len(rows)
                if at + sum(len(r["data"]) for r in rows) - skip < end:
                    # the next chunks travel while these are handed out
                    ahead = asyncio.ensure_future(
                        self._fetch(Q["chunks"], upload, seq, self.read_ahead)
                    )
                for row in rows:
                    data = row["data"][skip : skip + end - at]
                    skip = 0
                    at += len(data)
                    for piece in range(0, len(data), chunk):
                        yield data[piece : piece + chunk]
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await ahead

    async def size(self, key: str) -> int | None:
        found = await self._fetchrow(Q["find"], check_key(key))
        return None if found is None else int(found["size"])

    async def created_at(self, key: str) -> float | None:
        found = await self._fetchval(Q["created_at"], check_key(key))
        return None if found is None else float(found)

    async def delete(self, key: str) -> bool:
        check_key(key)

        async def drop(conn: Any) -> bool:
            await conn.execute(Q["lock_key"], key)
            upload = await conn.fetchval(Q["drop_name"], key)
            if upload is None:
                return False
            await conn.execute(Q["retire_upload"], upload, self.clock())
            return True

        dropped = bool(await self._transaction(drop))
        await self._maybe_sweep()
        return dropped

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        after = ""
        while True:
            page = await self._fetch(Q["names"], prefix, after, _NAMES_PAGE)
            for row in page:
                yield row["key"]
            if len(page) < _NAMES_PAGE:
                return
            after = page[-1]["key"]

    # -- what the writers and the sweep run ----------------------------------------------

    async def add_chunk(self, upload: str, seq: int, data: bytes) -> bool:
        """Store one chunk of the pending ``upload``; False when it is no longer pending.

        Committed without waiting for the WAL flush: the publish that makes the chunks
        visible waits for it, and that flush covers everything written before it, so a
        published blob is durable whole, while a crash before the publish loses only
        chunks no name points at."""

        with self._guard():
            status: str = await self._chunk_pool.execute(Q["add_chunk"], upload, seq, data)
        return status.endswith(" 1")

    async def touch(self, upload: str) -> bool:
        """Mark the pending ``upload`` as alive; False when it is no longer pending."""
        return await self.execute(Q["touch_upload"], upload, self.clock()) == 1

    async def publish(self, key: str, upload: str, size: int) -> None:
        """Point ``key`` at the pending ``upload`` and retire the one it had, atomically."""

        async def swap(conn: Any) -> None:
            await conn.execute(Q["lock_key"], key)
            if await conn.execute(Q["claim_upload"], upload) != "DELETE 1":
                raise StoreError(f"the upload of blob {key} was abandoned and swept")
            old = await conn.fetchval(Q["current_upload"], key)
            now = self.clock()
            await conn.execute(Q["publish"], key, upload, size, now)
            if old is not None:
                await conn.execute(Q["retire_upload"], old, now)

        await self._transaction(swap)
        await self._maybe_sweep()

    async def sweep(self) -> int:
        """Delete the uploads no name points at, untouched for ``grace`` seconds; how many."""
        self._swept_at = self.clock()
        before = self._swept_at - self.grace

        async def step(conn: Any) -> int:
            rows = await conn.fetch(Q["stale_uploads"], before, _SWEEP_BATCH)
            if rows:
                await conn.execute(Q["drop_chunks"], [r["id"] for r in rows])
            return len(rows)

        total = 0
        while swept := await self._transaction(step):
            total += swept
        return total

    async def _maybe_sweep(self) -> None:
        """Sweep now and then after a write or delete. Best effort: the write it follows
        has committed, so a sweep that fails is logged and tried again later, never
        reported to that write's caller."""
        if self.clock() - self._swept_at >= self.sweep_every:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("could not sweep abandoned blob uploads (%s); trying later", exc)

    async def execute(self, query: str, *args: Any) -> int:
        """Run ``query``; the number of rows it changed."""
        with self._guard():
            status: str = await self._pool.execute(query, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _fetchval(self, query: str, *args: Any) -> Any:
        with self._guard():
            return await self._pool.fetchval(query, *args)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        with self._guard():
            rows: list[Any] = await self._pool.fetch(query, *args)
        return rows

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        with self._guard():
            return await self._pool.fetchrow(query, *args)

    async def _transaction(self, fn: Callable[[Any], Any]) -> Any:
        with self._guard():
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Driver errors as the store's: unavailable (503) or failed."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL blob store is not open")
        asyncpg = self._asyncpg
        try:
            yield
        except self._unavailable as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL failed: {exc}") from exc
