-- Quarantine (issue 13). Same SQL subset as the other migrations (TEXT, BIGINT), so SQLite
-- and Postgres share it.
--
-- media.quarantined_by: NULL = served normally. Otherwise who or what quarantined it:
--   * an admin's Matrix user id (`@admin:example.org`): quarantined by media id or by user;
--   * `hash:<sha256>`: its content hash is in quarantined_hashes;
--   * `origin:<server name>`: its origin server is in quarantined_origins.
-- Quarantined media answers 404 on every download, thumbnail and federation path.
ALTER TABLE media ADD COLUMN quarantined_by TEXT;
-- 1 = protected ("safe from quarantine", as in Synapse): no kind of quarantine marks it.
ALTER TABLE media ADD COLUMN safe_from_quarantine BIGINT NOT NULL DEFAULT 0;

-- Content hashes whose bytes may not be uploaded (403) or fetched again.
CREATE TABLE quarantined_hashes (
    sha256         TEXT   NOT NULL PRIMARY KEY,
    quarantined_by TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

-- Servers whose media is quarantined and never fetched again.
CREATE TABLE quarantined_origins (
    origin         TEXT   NOT NULL PRIMARY KEY,
    quarantined_by TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

-- Quarantine by user and the admin list of a user's media look media up by uploader.
CREATE INDEX media_user_idx ON media (user_id, created_at_ms);
