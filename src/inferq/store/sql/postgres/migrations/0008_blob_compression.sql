-- Blob chunks compressed with lz4, or not at all where the server lacks it (before
-- PostgreSQL 14, or built without lz4), instead of the default pglz. pglz cost the writer
-- 15-22 ms of server CPU a MiB, on text (JSONL, stored at 0.46 of its size) and on
-- incompressible bytes alike (it gives up on those only after reading most of a chunk);
-- lz4 costs 5-8 (text at 0.49), no compression 3-6, so an upload is no longer bound by
-- it (docs/benchmarks.md, blob stores). Only chunks written from now on change.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE blob_chunks ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
END $$;
