-- Media metadata. Written in the SQL subset SQLite and Postgres share (TEXT, BIGINT),
-- so one migration set serves both backends.

-- One row per stored media item, local or fetched from a remote server.
CREATE TABLE media (
    origin        TEXT   NOT NULL,
    media_id      TEXT   NOT NULL,
    user_id       TEXT,
    content_type  TEXT   NOT NULL,
    upload_name   TEXT,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT   NOT NULL,
    datastore_id  TEXT   NOT NULL,
    location      TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);

-- Dedup and quarantine look media up by content hash.
CREATE INDEX media_sha256_idx ON media (sha256);

-- Media ids handed out by POST /_matrix/media/v1/create and not uploaded yet.
CREATE TABLE pending_uploads (
    origin        TEXT   NOT NULL,
    media_id      TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id)
);

-- The per-user quota check counts a user's unexpired rows.
CREATE INDEX pending_uploads_user_idx ON pending_uploads (user_id, expires_at_ms);
-- The sweeper deletes expired rows.
CREATE INDEX pending_uploads_expiry_idx ON pending_uploads (expires_at_ms);
