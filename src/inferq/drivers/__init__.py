"""What the adapters share about the database drivers they use, below them and above
core: the PostgreSQL job store (:mod:`inferq.store.postgres`) and blob store
(:mod:`inferq.blobs.postgres`) may not import each other, but read asyncpg's errors
the same way."""
