-- Blobs (the bytes of files, datasets and outputs) in the database, so that a fleet needs
-- no shared volume: inferq.blobs.postgres. A blob is a name pointing at one upload; an
-- upload is a run of chunks of at most 1 MiB. A writer fills an upload that no name points
-- at, then swaps the name to it in one transaction, so a reader sees the old bytes or the
-- new ones, never a part.
CREATE TABLE blobs (
    key        TEXT             PRIMARY KEY,
    upload_id  TEXT             NOT NULL,
    size       BIGINT           NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

-- Uploads no name points at: one being written (touched at every chunk), or one a
-- replace or delete retired (kept a while for the reads still streaming it). Those
-- untouched for an hour are deleted with their chunks (a crashed writer's, old bytes).
CREATE TABLE blob_uploads (
    id         TEXT             PRIMARY KEY,
    touched_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX blob_uploads_touched ON blob_uploads (touched_at);

CREATE TABLE blob_chunks (
    upload_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    data      BYTEA   NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
