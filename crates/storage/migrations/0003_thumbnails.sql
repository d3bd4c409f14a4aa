-- Thumbnails: one row per generated (media, asked size, method, animated), the bytes a
-- content-addressed object like any media. width/height are the size the thumbnail was
-- made for (a configured size, or the asked one); out_width/out_height what it came out as
-- (smaller when the source is: thumbnails never upscale).
CREATE TABLE thumbnails (
    origin        TEXT   NOT NULL,
    media_id      TEXT   NOT NULL,
    width         BIGINT NOT NULL,
    height        BIGINT NOT NULL,
    method        TEXT   NOT NULL,
    animated      BIGINT NOT NULL,
    content_type  TEXT   NOT NULL,
    out_width     BIGINT NOT NULL,
    out_height    BIGINT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT   NOT NULL,
    datastore_id  TEXT   NOT NULL,
    location      TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, animated)
);

-- Deletion checks every reference to a stored object.
CREATE INDEX thumbnails_location_idx ON thumbnails (datastore_id, location);
