-- Purge: when media was last served, and the indexes the purge selections use.

-- Last download, thumbnail or federation serve, written in batches by the web layer (not
-- once per download). NULL: not served since it was stored; created_at_ms counts then.
ALTER TABLE media ADD COLUMN last_access_ms BIGINT;

-- Remote media not accessed since a time: the expression the selection compares.
CREATE INDEX media_last_access_idx ON media ((COALESCE(last_access_ms, created_at_ms)));
-- A user's media: media_user_idx (0004). Quarantined media: a partial index, as few rows are.
CREATE INDEX media_quarantined_idx ON media (quarantined_by) WHERE quarantined_by IS NOT NULL;
