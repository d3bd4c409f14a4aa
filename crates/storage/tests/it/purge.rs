//! Purge selection, row removal, last access and the orphan sweep, on SQLite and Postgres
//! with a real datastore.

use bytes::Bytes;
use mr_storage::content::commit_claimed;
use mr_storage::purge::{sweep_orphans, PURGE_BATCH_ROWS};
use mr_storage::{Database, FileDatastore, MediaRecord, PurgeScope, StoredObject, ThumbnailRecord};

use crate::common::{on_both_backends, Fixture};

on_both_backends!(
    each_scope_selects_only_its_media,
    quarantined_scope_follows_the_mark,
    purging_twice_removes_nothing_the_second_time,
    thumbnail_rows_go_with_their_media,
    remote_purge_counts_last_access_and_creation,
    access_keeps_the_latest_time,
    large_purges_run_in_batches,
    sweep_removes_only_unreferenced_files,
);

async fn setup(fx: &Fixture) -> (tempfile::TempDir, Database, FileDatastore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::new("default", dir.path().join("media")).unwrap();
    (dir, fx.connect().await, store)
}

/// Stores `bytes` (claimed, then released once the caller's row exists).
async fn store_object(db: &Database, store: &FileDatastore, bytes: &[u8]) -> StoredObject {
    let mut writer = store.writer(u64::MAX).unwrap();
    writer.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    let staged = writer.finish().await.unwrap();
    let (object, claim) = commit_claimed(db, store, staged, 1).await.unwrap();
    claim.release().await;
    object
}

fn media(origin: &str, id: &str, user: Option<&str>, object: &StoredObject) -> MediaRecord {
    MediaRecord {
        origin: origin.to_owned(),
        media_id: id.to_owned(),
        user_id: user.map(str::to_owned),
        content_type: "application/octet-stream".to_owned(),
        upload_name: None,
        size_bytes: object.size,
        sha256: object.sha256.clone(),
        datastore_id: "default".to_owned(),
        location: object.location.clone(),
        created_at_ms: 1_000,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

fn thumbnail(origin: &str, id: &str, width: u32, object: &StoredObject) -> ThumbnailRecord {
    ThumbnailRecord {
        origin: origin.to_owned(),
        media_id: id.to_owned(),
        width,
        height: width,
        method: "crop".to_owned(),
        animated: false,
        content_type: "image/png".to_owned(),
        out_width: width,
        out_height: width,
        size_bytes: object.size,
        sha256: object.sha256.clone(),
        datastore_id: "default".to_owned(),
        location: object.location.clone(),
        created_at_ms: 1_000,
    }
}

fn ids(removed: &[MediaRecord]) -> Vec<String> {
    let mut ids: Vec<String> = removed
        .iter()
        .map(|m| format!("{}/{}", m.origin, m.media_id))
        .collect();
    ids.sort();
    ids
}

/// Runs batches until one is empty; returns every media row removed.
async fn purge_all(db: &Database, scope: &PurgeScope) -> Vec<MediaRecord> {
    let mut all = Vec::new();
    loop {
        let batch = db.purge_batch(scope).await.unwrap();
        if batch.media.is_empty() {
            assert!(batch.thumbnails.is_empty());
            return all;
        }
        all.extend(batch.media);
    }
}

fn remote_scope(before_ms: i64) -> PurgeScope {
    PurgeScope::RemoteNotAccessedSince {
        local_origins: vec!["local.test".to_owned(), "other-local.test".to_owned()],
        before_ms,
    }
}

async fn each_scope_selects_only_its_media(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"one").await;
    for (origin, id, user) in [
        ("local.test", "a1", Some("@alice:local.test")),
        ("local.test", "a2", Some("@alice:local.test")),
        ("local.test", "b1", Some("@bob:local.test")),
        ("other-local.test", "c1", Some("@carol:other-local.test")),
        ("remote.test", "r1", None),
        ("remote.test", "r2", None),
    ] {
        db.insert_media(&media(origin, id, user, &object))
            .await
            .unwrap();
    }

    let one = PurgeScope::Media {
        origin: "local.test".to_owned(),
        media_id: "b1".to_owned(),
    };
    assert_eq!(ids(&purge_all(&db, &one).await), ["local.test/b1"]);
    let alice = PurgeScope::User {
        user_id: "@alice:local.test".to_owned(),
    };
    assert_eq!(
        ids(&purge_all(&db, &alice).await),
        ["local.test/a1", "local.test/a2"]
    );
    // Created at 1000: not older than 1000, older than 1001; local media never.
    assert!(purge_all(&db, &remote_scope(1_000)).await.is_empty());
    assert_eq!(
        ids(&purge_all(&db, &remote_scope(1_001)).await),
        ["remote.test/r1", "remote.test/r2"]
    );
    assert!(db
        .get_media("other-local.test", "c1")
        .await
        .unwrap()
        .is_some());
    assert_eq!(db.media_count().await.unwrap(), 1);
    // Rows only: the content is the caller's to remove.
    assert!(store.path_of(&object.location).unwrap().exists());
}

async fn quarantined_scope_follows_the_mark(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"abuse").await;
    for id in ["bad", "lifted", "fine"] {
        db.insert_media(&media("local.test", id, Some("@u:local.test"), &object))
            .await
            .unwrap();
    }
    for id in ["bad", "lifted"] {
        db.quarantine_media("local.test", id, "@admin:local.test")
            .await
            .unwrap()
            .expect("marked");
    }
    db.unquarantine_media("local.test", "lifted")
        .await
        .unwrap()
        .expect("lifted");
    assert_eq!(
        ids(&purge_all(&db, &PurgeScope::Quarantined).await),
        ["local.test/bad"]
    );
    assert!(purge_all(&db, &PurgeScope::Quarantined).await.is_empty());
    assert_eq!(db.media_count().await.unwrap(), 2);
}

async fn purging_twice_removes_nothing_the_second_time(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"twice").await;
    db.insert_media(&media("local.test", "x", Some("@u:local.test"), &object))
        .await
        .unwrap();
    let scope = PurgeScope::User {
        user_id: "@u:local.test".to_owned(),
    };
    assert_eq!(purge_all(&db, &scope).await.len(), 1);
    assert!(purge_all(&db, &scope).await.is_empty());
    let one = PurgeScope::Media {
        origin: "local.test".to_owned(),
        media_id: "x".to_owned(),
    };
    assert!(purge_all(&db, &one).await.is_empty());
}

async fn thumbnail_rows_go_with_their_media(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"image").await;
    let thumb = store_object(&db, &store, b"thumb").await;
    for id in ["keep", "drop"] {
        db.insert_media(&media("local.test", id, Some("@u:local.test"), &object))
            .await
            .unwrap();
        for width in [32, 96] {
            db.insert_thumbnail(&thumbnail("local.test", id, width, &thumb))
                .await
                .unwrap();
        }
    }
    let batch = db
        .purge_batch(&PurgeScope::Media {
            origin: "local.test".to_owned(),
            media_id: "drop".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(ids(&batch.media), ["local.test/drop"]);
    assert_eq!(batch.thumbnails.len(), 2);
    assert!(batch.thumbnails.iter().all(|t| t.media_id == "drop"));
    assert_eq!(
        db.thumbnails_of("local.test", "keep", "crop", false)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(db
        .thumbnails_of("local.test", "drop", "crop", false)
        .await
        .unwrap()
        .is_empty());
    // The thumbnails' shared content is still referenced by "keep"'s rows.
    assert!(db
        .location_in_use("default", &thumb.location)
        .await
        .unwrap());

    // A thumbnail row whose media is gone (generated after the purge) is swept.
    db.insert_thumbnail(&thumbnail("local.test", "drop", 64, &thumb))
        .await
        .unwrap();
    let stray = db.purge_thumbnails_without_media().await.unwrap();
    assert_eq!(stray.len(), 1);
    assert_eq!(stray[0].width, 64);
    assert!(db
        .purge_thumbnails_without_media()
        .await
        .unwrap()
        .is_empty());
}

async fn remote_purge_counts_last_access_and_creation(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"remote").await;
    for id in ["seen", "unseen"] {
        db.insert_media(&media("remote.test", id, None, &object))
            .await
            .unwrap();
    }
    db.record_access(&[("remote.test".to_owned(), "seen".to_owned())], 5_000)
        .await
        .unwrap();
    assert_eq!(
        db.last_access_ms("remote.test", "seen").await.unwrap(),
        Some(5_000)
    );
    assert_eq!(
        db.last_access_ms("remote.test", "unseen").await.unwrap(),
        None
    );
    // Created at 1000, never accessed: older than 2000. Accessed at 5000: not.
    assert_eq!(
        ids(&purge_all(&db, &remote_scope(2_000)).await),
        ["remote.test/unseen"]
    );
    assert!(purge_all(&db, &remote_scope(5_000)).await.is_empty());
    assert_eq!(
        ids(&purge_all(&db, &remote_scope(5_001)).await),
        ["remote.test/seen"]
    );
}

async fn access_keeps_the_latest_time(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"access").await;
    let keys: Vec<(String, String)> = (0..1_200)
        .map(|i| ("remote.test".to_owned(), format!("m{i}")))
        .collect();
    for (origin, id) in &keys[..3] {
        db.insert_media(&media(origin, id, None, &object))
            .await
            .unwrap();
    }
    // More keys than one batch, most of them without a row: skipped, not an error.
    db.record_access(&keys, 9_000).await.unwrap();
    // An older flush (another process's) does not move it back.
    db.record_access(&keys[..1], 8_000).await.unwrap();
    for (origin, id) in &keys[..3] {
        assert_eq!(db.last_access_ms(origin, id).await.unwrap(), Some(9_000));
    }
    assert_eq!(db.media_count().await.unwrap(), 3);
}

async fn large_purges_run_in_batches(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let object = store_object(&db, &store, b"many").await;
    let total = PURGE_BATCH_ROWS * 2 + 7;
    for i in 0..total {
        db.insert_media(&media(
            "local.test",
            &format!("m{i}"),
            Some("@u:local.test"),
            &object,
        ))
        .await
        .unwrap();
    }
    let scope = PurgeScope::User {
        user_id: "@u:local.test".to_owned(),
    };
    let first = db.purge_batch(&scope).await.unwrap();
    assert_eq!(first.media.len(), PURGE_BATCH_ROWS);
    assert_eq!(
        db.media_count().await.unwrap(),
        (total - PURGE_BATCH_ROWS) as u64
    );
    assert_eq!(purge_all(&db, &scope).await.len(), total - PURGE_BATCH_ROWS);
    assert_eq!(db.media_count().await.unwrap(), 0);
}

async fn sweep_removes_only_unreferenced_files(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let by_media = store_object(&db, &store, b"media row").await;
    let by_thumbnail = store_object(&db, &store, b"thumbnail row").await;
    let orphan = store_object(&db, &store, b"orphan").await;
    db.insert_media(&media("local.test", "m", Some("@u:local.test"), &by_media))
        .await
        .unwrap();
    db.insert_thumbnail(&thumbnail("local.test", "m", 32, &by_thumbnail))
        .await
        .unwrap();
    // An upload that has claimed its content and not yet written its row.
    let mut writer = store.writer(u64::MAX).unwrap();
    writer.write(Bytes::from_static(b"claimed")).await.unwrap();
    let (claimed, claim) = commit_claimed(&db, &store, writer.finish().await.unwrap(), 1)
        .await
        .unwrap();
    // Files that are not objects are never touched.
    let stray = store.root().join("ab").join("notes.txt");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"not ours").unwrap();

    let mut evicted = Vec::new();
    let report = sweep_orphans(&db, &store, |sha| evicted.push(sha.to_owned()))
        .await
        .unwrap();
    assert_eq!(report.files_checked, 4);
    assert_eq!(report.files_removed, 1);
    assert_eq!(report.bytes_removed, b"orphan".len() as u64);
    assert_eq!(evicted, std::slice::from_ref(&orphan.sha256));
    assert!(!store.path_of(&orphan.location).unwrap().exists());
    for kept in [&by_media, &by_thumbnail, &claimed] {
        assert!(store.path_of(&kept.location).unwrap().exists());
    }
    assert!(stray.exists());

    // Idempotent; and once the claim is gone (its upload failed), the file goes too.
    let again = sweep_orphans(&db, &store, |_| {}).await.unwrap();
    assert_eq!((again.files_checked, again.files_removed), (3, 0));
    claim.release().await;
    let last = sweep_orphans(&db, &store, |_| {}).await.unwrap();
    assert_eq!(last.files_removed, 1);
    assert!(!store.path_of(&claimed.location).unwrap().exists());
}
