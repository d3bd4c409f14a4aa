//! The media-row cache of downloads (`Database::media_row`): every change made through a
//! `Database` is seen by its next `media_row` at once; a change made by another handle (another
//! process) is seen once `MEDIA_ROW_TTL` has passed. Each body on SQLite and on Postgres.

use mr_storage::row_cache::MEDIA_ROW_TTL;
use mr_storage::{Database, MediaRecord, PurgeScope};

use crate::common::{on_both_backends, Fixture};

on_both_backends!(
    every_change_through_the_handle_is_seen_at_once,
    another_handles_change_is_seen_after_the_ttl,
);

const ORIGIN: &str = "example.org";
const ADMIN: &str = "@admin:example.org";

fn media(media_id: &str, user: &str, sha: &str) -> MediaRecord {
    MediaRecord {
        origin: ORIGIN.to_owned(),
        media_id: media_id.to_owned(),
        user_id: Some(user.to_owned()),
        content_type: "image/png".to_owned(),
        upload_name: None,
        size_bytes: 10,
        sha256: sha.repeat(32),
        datastore_id: "default".to_owned(),
        location: format!("{sha}/{sha}/{}", sha.repeat(32)),
        created_at_ms: 1_700_000_000_000,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

/// The row as a download sees it: (exists, quarantined, protected).
async fn seen(db: &Database, id: &str) -> Option<(bool, bool)> {
    db.media_row(ORIGIN, id)
        .await
        .unwrap()
        .map(|row| (row.quarantined_by.is_some(), row.safe_from_quarantine))
}

const SERVED: Option<(bool, bool)> = Some((false, false));
const QUARANTINED: Option<(bool, bool)> = Some((true, false));

async fn every_change_through_the_handle_is_seen_at_once(fx: &Fixture) {
    let db = fx.connect().await;
    for (id, user, sha) in [
        ("a", "@u:x", "aa"),
        ("b", "@u:x", "bb"),
        ("c", "@v:x", "cc"),
    ] {
        db.insert_media(&media(id, user, sha)).await.unwrap();
        // Read twice: the second answer comes from the cache.
        assert_eq!(seen(&db, id).await, SERVED);
        assert_eq!(seen(&db, id).await, SERVED);
    }
    assert_eq!(seen(&db, "missing").await, None);

    db.quarantine_media(ORIGIN, "a", ADMIN).await.unwrap();
    assert_eq!(seen(&db, "a").await, QUARANTINED, "quarantine by media");
    db.unquarantine_media(ORIGIN, "a").await.unwrap();
    assert_eq!(seen(&db, "a").await, SERVED, "unquarantine by media");

    db.set_safe_from_quarantine(ORIGIN, "b", true)
        .await
        .unwrap();
    assert_eq!(seen(&db, "b").await, Some((false, true)), "protection");
    db.set_safe_from_quarantine(ORIGIN, "b", false)
        .await
        .unwrap();
    assert_eq!(seen(&db, "b").await, SERVED, "protection lifted");

    db.quarantine_user_media("@u:x", ADMIN).await.unwrap();
    assert_eq!(seen(&db, "a").await, QUARANTINED, "quarantine by user");
    assert_eq!(seen(&db, "b").await, QUARANTINED, "quarantine by user");
    assert_eq!(seen(&db, "c").await, SERVED, "another user's media");
    for id in ["a", "b"] {
        db.unquarantine_media(ORIGIN, id).await.unwrap();
        assert_eq!(seen(&db, id).await, SERVED);
    }

    let sha = "cc".repeat(32);
    db.quarantine_hash(&sha, ADMIN, 1).await.unwrap();
    assert_eq!(seen(&db, "c").await, QUARANTINED, "quarantine by hash");
    db.unquarantine_hash(&sha).await.unwrap();
    assert_eq!(seen(&db, "c").await, SERVED, "hash quarantine lifted");

    db.quarantine_origin(ORIGIN, ADMIN, 1).await.unwrap();
    for id in ["a", "b", "c"] {
        assert_eq!(seen(&db, id).await, QUARANTINED, "quarantine by origin");
    }
    db.unquarantine_origin(ORIGIN).await.unwrap();
    for id in ["a", "b", "c"] {
        assert_eq!(seen(&db, id).await, SERVED, "origin quarantine lifted");
    }

    // A row written under a standing quarantine, read between its insert and its mark.
    db.quarantine_hash(&"dd".repeat(32), ADMIN, 1)
        .await
        .unwrap();
    db.insert_media(&media("d", "@u:x", "dd")).await.unwrap();
    assert_eq!(seen(&db, "d").await, SERVED);
    assert!(db
        .apply_standing_quarantine(ORIGIN, "d")
        .await
        .unwrap()
        .is_some());
    assert_eq!(seen(&db, "d").await, QUARANTINED, "standing quarantine");
    assert!(db.withdraw_quarantined_media(ORIGIN, "d").await.unwrap());
    assert_eq!(seen(&db, "d").await, None, "withdrawn");

    let removed = db
        .purge_batch(&PurgeScope::Media {
            origin: ORIGIN.to_owned(),
            media_id: "a".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(removed.media.len(), 1);
    assert_eq!(seen(&db, "a").await, None, "purged");
    db.purge_batch(&PurgeScope::User {
        user_id: "@v:x".to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(seen(&db, "c").await, None, "purged by user");
    assert_eq!(seen(&db, "b").await, SERVED);
}

async fn another_handles_change_is_seen_after_the_ttl(fx: &Fixture) {
    let server = fx.connect().await;
    // Another process on the same database: the `purge` command, another repo.
    let other = fx.connect().await;
    server
        .insert_media(&media("a", "@u:x", "aa"))
        .await
        .unwrap();
    assert_eq!(seen(&server, "a").await, SERVED);
    other.quarantine_media(ORIGIN, "a", ADMIN).await.unwrap();
    // The bound, not a speed: past it the row is read again.
    tokio::time::sleep(MEDIA_ROW_TTL + MEDIA_ROW_TTL / 2).await;
    assert_eq!(seen(&server, "a").await, QUARANTINED);
    other.purge_batch(&PurgeScope::Quarantined).await.unwrap();
    tokio::time::sleep(MEDIA_ROW_TTL + MEDIA_ROW_TTL / 2).await;
    assert_eq!(seen(&server, "a").await, None);
}
