//! Claims and safe deletion of shared content, on SQLite and Postgres with a real datastore.

use std::sync::Arc;

use bytes::Bytes;
use mr_storage::content::{
    commit_claimed, commit_unless_quarantined, remove_unreferenced, Admission,
};
use mr_storage::{Database, Error, FileDatastore, MediaRecord, PendingUpload, StagedObject};

use crate::common::{on_both_backends, wait_for_no_temp_files, Fixture};

on_both_backends!(
    a_claim_or_a_row_keeps_content,
    expired_claims_are_swept,
    concurrent_uploads_and_deletions_never_lose_a_recorded_object,
    quarantined_content_is_refused_by_the_claim,
    no_row_is_written_once_its_claim_is_gone,
    rows_recorded_together_each_get_their_own_outcome,
    a_recorded_row_releases_its_claim_and_takes_the_standing_marks,
);

async fn stage(store: &FileDatastore, bytes: &[u8]) -> StagedObject {
    let mut writer = store.writer(u64::MAX).unwrap();
    writer.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    writer.finish().await.unwrap()
}

fn row(media_id: &str, object: &mr_storage::StoredObject) -> MediaRecord {
    MediaRecord {
        origin: "example.org".to_owned(),
        media_id: media_id.to_owned(),
        user_id: None,
        content_type: "application/octet-stream".to_owned(),
        upload_name: None,
        size_bytes: object.size,
        sha256: object.sha256.clone(),
        datastore_id: "default".to_owned(),
        location: object.location.clone(),
        created_at_ms: 1,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

async fn setup(fx: &Fixture) -> (tempfile::TempDir, Database, FileDatastore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::new("default", dir.path().join("media")).unwrap();
    (dir, fx.connect().await, store)
}

async fn a_claim_or_a_row_keeps_content(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let (object, claim) = commit_claimed(&db, &store, stage(&store, b"claimed").await, 1)
        .await
        .unwrap();
    let path = store.path_of(&object.location).unwrap();
    assert!(!remove_unreferenced(&db, &store, &object.location)
        .await
        .unwrap());
    assert!(path.exists(), "a claim keeps the bytes");

    db.insert_media(&row("a", &object)).await.unwrap();
    claim.release().await;
    assert!(!remove_unreferenced(&db, &store, &object.location)
        .await
        .unwrap());
    assert!(path.exists(), "a row keeps the bytes");

    // Unreferenced content goes, and nothing is left aside in the temp dir.
    let (other, claim) = commit_claimed(&db, &store, stage(&store, b"orphan").await, 1)
        .await
        .unwrap();
    claim.release().await;
    assert!(remove_unreferenced(&db, &store, &other.location)
        .await
        .unwrap());
    assert!(!store.path_of(&other.location).unwrap().exists());
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
    // Already gone: nothing to do.
    assert!(!remove_unreferenced(&db, &store, &other.location)
        .await
        .unwrap());
}

/// The upload path's claim refuses bytes whose hash is quarantined or that quarantined
/// media holds, writing nothing and keeping nothing; other bytes are stored as before.
async fn quarantined_content_is_refused_by_the_claim(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let staged = stage(&store, b"refused by hash").await;
    let (sha256, location) = (
        staged.object().sha256.clone(),
        staged.object().location.clone(),
    );
    db.quarantine_hash(&sha256, "@admin:example.org", 1)
        .await
        .unwrap();
    match commit_unless_quarantined(&db, &store, staged, 1)
        .await
        .unwrap()
    {
        Admission::Quarantined { sha256: refused } => assert_eq!(refused, sha256),
        Admission::Stored(..) => panic!("quarantined bytes were stored"),
    }
    assert!(
        !db.location_in_use("default", &location).await.unwrap(),
        "no claim left"
    );
    assert!(
        !store.path_of(&location).unwrap().exists(),
        "nothing at the content address"
    );
    // The temp file goes.
    wait_for_no_temp_files(&store).await;

    // Bytes that a quarantined media holds are refused the same way.
    let (held, claim) = commit_claimed(&db, &store, stage(&store, b"held").await, 1)
        .await
        .unwrap();
    db.insert_media(&row("held", &held)).await.unwrap();
    claim.release().await;
    db.quarantine_media("example.org", "held", "@admin:example.org")
        .await
        .unwrap();
    let again = commit_unless_quarantined(&db, &store, stage(&store, b"held").await, 1)
        .await
        .unwrap();
    assert!(matches!(again, Admission::Quarantined { .. }));

    // Lifted: the same bytes are stored, and their row written under the claim.
    db.unquarantine_hash(&sha256).await.unwrap();
    let staged = stage(&store, b"refused by hash").await;
    let Admission::Stored(object, claim) = commit_unless_quarantined(&db, &store, staged, 1)
        .await
        .unwrap()
    else {
        panic!("bytes no longer quarantined were refused");
    };
    assert_eq!(
        claim.record(&row("lifted", &object), false).await.unwrap(),
        None
    );
    assert!(store.path_of(&object.location).unwrap().exists());
    assert!(db
        .get_media("example.org", "lifted")
        .await
        .unwrap()
        .is_some());
}

/// A claim swept as stale (or lost) before its upload's row is written: the row is not
/// written (its bytes may have been deleted meanwhile), on both write paths, and a
/// `/create`d id keeps its pending row.
async fn no_row_is_written_once_its_claim_is_gone(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    for (media_id, completes_pending) in [("plain", false), ("created", true)] {
        if completes_pending {
            let pending = PendingUpload {
                origin: "example.org".to_owned(),
                media_id: media_id.to_owned(),
                user_id: "@alice:example.org".to_owned(),
                created_at_ms: 1,
                expires_at_ms: i64::MAX,
            };
            db.create_pending(&pending).await.unwrap();
        }
        let staged = stage(&store, media_id.as_bytes()).await;
        let (object, claim) = commit_claimed(&db, &store, staged, 1_000).await.unwrap();
        assert_eq!(db.delete_claims_made_before(1_000).await.unwrap(), 1);
        let written = claim
            .record(&row(media_id, &object), completes_pending)
            .await;
        assert!(
            matches!(written, Err(Error::ClaimLost { .. })),
            "{media_id}: {written:?}"
        );
        assert!(db
            .get_media("example.org", media_id)
            .await
            .unwrap()
            .is_none());
        if completes_pending {
            assert!(db
                .get_pending("example.org", media_id)
                .await
                .unwrap()
                .is_some());
        }
    }
}

async fn expired_claims_are_swept(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let (object, _claim_of_a_crashed_process) =
        commit_claimed(&db, &store, stage(&store, b"crashed").await, 1_000)
            .await
            .unwrap();
    assert_eq!(db.delete_claims_made_before(999).await.unwrap(), 0);
    assert!(db
        .location_in_use("default", &object.location)
        .await
        .unwrap());
    assert_eq!(db.delete_claims_made_before(1_000).await.unwrap(), 1);
    assert!(remove_unreferenced(&db, &store, &object.location)
        .await
        .unwrap());
}

/// Uploads of the same bytes (claim, store, row; half of them fail their row and clean up)
/// race deleters sweeping that content. Every recorded row must still have its file.
async fn concurrent_uploads_and_deletions_never_lose_a_recorded_object(fx: &Fixture) {
    const UPLOADS: usize = 60;
    const DELETERS: usize = 3;
    let (_dir, db, store) = setup(fx).await;
    let bytes = Arc::new(vec![9u8; 4096]);
    let location = stage(&store, &bytes).await.object().location.clone();
    let mut tasks = Vec::new();
    for i in 0..UPLOADS {
        let (db, store, bytes) = (db.clone(), store.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let staged = stage(&store, &bytes).await;
            let (object, claim) = commit_claimed(&db, &store, staged, 1).await.unwrap();
            tokio::task::yield_now().await;
            let recorded = if i % 2 == 0 {
                db.insert_media(&row(&format!("m{i}"), &object))
                    .await
                    .unwrap();
                true
            } else {
                false
            };
            claim.release().await;
            if !recorded {
                remove_unreferenced(&db, &store, &object.location)
                    .await
                    .unwrap();
            }
            object
        }));
    }
    for _ in 0..DELETERS {
        let (db, store, location) = (db.clone(), store.clone(), location.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..UPLOADS {
                remove_unreferenced(&db, &store, &location).await.unwrap();
                tokio::task::yield_now().await;
            }
            mr_storage::StoredObject {
                sha256: String::new(),
                size: 0,
                location,
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(db.location_in_use("default", &location).await.unwrap());
    let on_disk =
        std::fs::read(store.path_of(&location).unwrap()).expect("recorded bytes are kept");
    assert_eq!(on_disk, *bytes);
}

#[tokio::test]
async fn an_object_a_crash_left_moved_aside_is_put_back_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let store = FileDatastore::new("default", root.clone()).unwrap();
    let object = stage(&store, b"mid-deletion").await.commit().await.unwrap();
    let path = store.path_of(&object.location).unwrap();
    // What a deleter that died between moving the file aside and deciding leaves.
    let aside = root
        .join("tmp")
        .join(format!("{}.x1.deleting", object.sha256));
    std::fs::rename(&path, &aside).unwrap();

    FileDatastore::new("default", root.clone()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"mid-deletion");
    assert!(!aside.exists());
}

/// Many uploads recording their rows at once (on Postgres they share batch statements):
/// each gets its own outcome, and a row Postgres refuses (a NUL in its name) fails only
/// its own upload.
async fn rows_recorded_together_each_get_their_own_outcome(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let (taken_object, taken_claim) =
        commit_claimed(&db, &store, stage(&store, b"first of taken").await, 1_000)
            .await
            .unwrap();
    taken_claim
        .record(&row("taken", &taken_object), false)
        .await
        .unwrap();

    let mut uploads = Vec::new();
    for i in 0..24 {
        let made_at = if i == 1 { 1 } else { 1_000 };
        let bytes = format!("upload number {i}");
        let staged = stage(&store, bytes.as_bytes()).await;
        let (object, claim) = commit_claimed(&db, &store, staged, made_at).await.unwrap();
        let mut record = row(&format!("m{i}"), &object);
        if i == 0 {
            record.media_id = "taken".to_owned();
        }
        uploads.push((i, object, claim, record));
    }
    // Upload 1's claim goes as if swept; upload 3's bytes get a standing quarantine after
    // their claim was made.
    assert_eq!(db.delete_claims_made_before(1).await.unwrap(), 1);
    let quarantined_sha = uploads[3].1.sha256.clone();
    db.quarantine_hash(&quarantined_sha, "@admin:example.org", 1_000)
        .await
        .unwrap();

    let results = futures_util::future::join_all(
        uploads.into_iter().map(|(i, _, claim, record)| async move {
            (i, record.clone(), claim.record(&record, false).await)
        }),
    )
    .await;
    for (i, record, result) in results {
        match i {
            0 => assert!(
                matches!(result, Err(Error::AlreadyExists { .. })),
                "{result:?}"
            ),
            1 => assert!(matches!(result, Err(Error::ClaimLost { .. })), "{result:?}"),
            3 => assert_eq!(result.unwrap(), Some(format!("hash:{quarantined_sha}"))),
            _ => assert_eq!(result.unwrap(), None, "upload {i}"),
        }
        let stored = db
            .get_media(&record.origin, &record.media_id)
            .await
            .unwrap();
        match i {
            0 => assert_eq!(
                stored.unwrap().sha256,
                taken_object.sha256,
                "the first row stays"
            ),
            1 => assert!(stored.is_none()),
            3 => assert_eq!(
                stored.unwrap().quarantined_by,
                Some(format!("hash:{quarantined_sha}"))
            ),
            _ => assert_eq!(stored.unwrap().sha256, record.sha256, "upload {i}"),
        }
    }

    // A row Postgres refuses (a NUL in its name) among others: only its upload fails.
    let mut uploads = Vec::new();
    for i in 0..8 {
        let staged = stage(&store, format!("second round {i}").as_bytes()).await;
        let (object, claim) = commit_claimed(&db, &store, staged, 1_000).await.unwrap();
        let mut record = row(&format!("second{i}"), &object);
        if i == 5 {
            record.upload_name = Some("bad\0name".to_owned());
        }
        uploads.push((i, claim, record));
    }
    let results = futures_util::future::join_all(
        uploads
            .into_iter()
            .map(|(i, claim, record)| async move { (i, claim.record(&record, false).await) }),
    )
    .await;
    for (i, result) in results {
        let stored = db
            .get_media("example.org", &format!("second{i}"))
            .await
            .unwrap();
        if i == 5 && db.backend_name() == "postgres" {
            assert!(result.is_err(), "{result:?}");
            assert!(stored.is_none());
        } else {
            assert_eq!(result.unwrap(), None, "second round {i}");
            assert!(stored.is_some(), "second round {i}");
        }
    }
}

/// What a row's write does besides the row: its claim is gone afterwards, and a standing
/// quarantine marks it (the origin's mark winning over the hash's), while a row protected
/// from quarantine or carrying a mark of its own is left as it came and reports no mark.
async fn a_recorded_row_releases_its_claim_and_takes_the_standing_marks(fx: &Fixture) {
    let (_dir, db, store) = setup(fx).await;
    let record = |media_id: &'static str, bytes: &'static [u8]| {
        let (db, store) = (db.clone(), store.clone());
        async move {
            let (object, claim) = commit_claimed(&db, &store, stage(&store, bytes).await, 1_000)
                .await
                .unwrap();
            (row(media_id, &object), claim)
        }
    };

    let (plain, claim) = record("plain", b"plain bytes").await;
    assert_eq!(claim.record(&plain, false).await.unwrap(), None);
    assert_eq!(
        db.delete_claims_made_before(i64::MAX).await.unwrap(),
        0,
        "the row's write released its claim"
    );

    let (hashed, claim) = record("hashed", b"quarantined bytes").await;
    db.quarantine_hash(&hashed.sha256, "@admin:example.org", 1_000)
        .await
        .unwrap();
    let hash_mark = format!("hash:{}", hashed.sha256);
    assert_eq!(
        claim.record(&hashed, false).await.unwrap(),
        Some(hash_mark.clone())
    );

    let (mut safe, claim) = record("safe", b"quarantined bytes").await;
    safe.safe_from_quarantine = true;
    assert_eq!(claim.record(&safe, false).await.unwrap(), None);

    let (mut marked, claim) = record("marked", b"quarantined bytes").await;
    marked.quarantined_by = Some("@admin:example.org".to_owned());
    assert_eq!(claim.record(&marked, false).await.unwrap(), None);

    db.quarantine_origin("example.org", "@admin:example.org", 1_000)
        .await
        .unwrap();
    let (both, claim) = record("both", b"quarantined bytes").await;
    assert_eq!(
        claim.record(&both, false).await.unwrap(),
        Some("origin:example.org".to_owned())
    );
    assert_eq!(db.delete_claims_made_before(i64::MAX).await.unwrap(), 0);

    let stored = |media_id: &'static str| {
        let db = db.clone();
        async move {
            db.get_media("example.org", media_id)
                .await
                .unwrap()
                .unwrap()
                .quarantined_by
        }
    };
    assert_eq!(stored("hashed").await, Some(hash_mark));
    assert_eq!(stored("safe").await, None);
    assert_eq!(
        stored("marked").await,
        Some("@admin:example.org".to_owned())
    );
    assert_eq!(stored("both").await, Some("origin:example.org".to_owned()));
}
