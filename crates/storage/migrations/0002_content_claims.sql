-- Content is stored once per hash and shared by every media row with those bytes, so it may
-- be deleted only when nothing refers to it. An upload claims the location its bytes go to
-- before moving them there and holds the claim until its media row exists; deletion checks
-- media rows and claims (see content.rs). A claim of a crashed process is swept after an hour.
CREATE TABLE content_claims (
    claim_id      TEXT   NOT NULL PRIMARY KEY,
    datastore_id  TEXT   NOT NULL,
    location      TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX content_claims_location_idx ON content_claims (datastore_id, location);
CREATE INDEX content_claims_created_idx ON content_claims (created_at_ms);

-- The reference check looks media up by where its bytes are.
CREATE INDEX media_location_idx ON media (datastore_id, location);
