-- Nodes: machines that run models for inferq and pull their work over HTTP
-- (inferq.core.nodes). Only the SHA-256 of a node's token is kept.
CREATE TABLE nodes (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    prefix     TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    created_at REAL    NOT NULL,
    revoked_at REAL,
    -- what its last hello announced: {"model": capacity}
    models     TEXT    NOT NULL DEFAULT '{}',
    version    TEXT    NOT NULL DEFAULT '',
    last_seen  REAL,
    in_flight  INTEGER NOT NULL DEFAULT 0,
    -- replicated jobs compared, and those where its answer was too far from the winner
    compared   INTEGER NOT NULL DEFAULT 0,
    disagreed  INTEGER NOT NULL DEFAULT 0
);
