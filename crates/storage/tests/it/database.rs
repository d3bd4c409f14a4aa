//! Every `Database` method, with each test body run on SQLite and on Postgres.

use mr_storage::{Database, Error, MediaRecord, PendingUpload};

use crate::common::{on_both_backends, Fixture};

on_both_backends!(
    media_round_trip,
    duplicate_media_is_already_exists,
    pending_lifecycle,
    complete_pending_without_pending_row_inserts_nothing,
    racing_completions_one_wins,
    concurrent_writes_commit_and_failed_ones_leave_nothing,
    expired_pending_sweep,
    migrations_are_idempotent,
    oversized_size_is_rejected,
    location_in_use_counts_rows_sharing_an_object,
    ping_answers_on_a_usable_database,
);

fn media(origin: &str, media_id: &str) -> MediaRecord {
    MediaRecord {
        origin: origin.to_owned(),
        media_id: media_id.to_owned(),
        user_id: Some("@alice:example.org".to_owned()),
        content_type: "img/png".to_owned(),
        upload_name: Some("holiday 🏖️ \"photo\"; v2.png".to_owned()),
        // Larger than u32 and i32: the column must be 64-bit.
        size_bytes: 5 * 1024 * 1024 * 1024 + 7,
        sha256: "ab".repeat(32),
        datastore_id: "default".to_owned(),
        location: format!("ab/ab/{}", "ab".repeat(32)),
        created_at_ms: 1_700_000_000_123,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

fn pending(origin: &str, media_id: &str, user: &str, expires_at_ms: i64) -> PendingUpload {
    PendingUpload {
        origin: origin.to_owned(),
        media_id: media_id.to_owned(),
        user_id: user.to_owned(),
        created_at_ms: expires_at_ms - 86_400_000,
        expires_at_ms,
    }
}

async fn media_round_trip(fx: &Fixture) {
    let db = fx.connect().await;
    assert_eq!(db.media_count().await.unwrap(), 0);
    let full = media("example.org", "abcDEF123_-");
    let sparse = MediaRecord {
        user_id: None,
        upload_name: None,
        size_bytes: 0,
        ..media("remote.example:8448", "other")
    };
    db.insert_media(&full).await.unwrap();
    db.insert_media(&sparse).await.unwrap();

    assert_eq!(
        db.get_media("example.org", "abcDEF123_-").await.unwrap(),
        Some(full)
    );
    assert_eq!(
        db.get_media("remote.example:8448", "other").await.unwrap(),
        Some(sparse)
    );
    assert_eq!(db.get_media("example.org", "missing").await.unwrap(), None);
    // Lookups are exact: another origin or a differently-cased id is another item.
    assert_eq!(
        db.get_media("remote.example:8448", "abcDEF123_-")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.get_media("example.org", "abcdef123_-").await.unwrap(),
        None
    );
    assert_eq!(db.media_count().await.unwrap(), 2);
}

async fn duplicate_media_is_already_exists(fx: &Fixture) {
    let db = fx.connect().await;
    let first = media("example.org", "dup");
    db.insert_media(&first).await.unwrap();
    let second = MediaRecord {
        content_type: "text/plain".into(),
        ..first.clone()
    };
    match db.insert_media(&second).await {
        Err(Error::AlreadyExists { origin, media_id }) => {
            assert_eq!((origin.as_str(), media_id.as_str()), ("example.org", "dup"));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The first row is untouched, and the same id on another origin is fine.
    assert_eq!(
        db.get_media("example.org", "dup").await.unwrap(),
        Some(first)
    );
    db.insert_media(&media("other.org", "dup")).await.unwrap();
    assert_eq!(db.media_count().await.unwrap(), 2);
}

async fn pending_lifecycle(fx: &Fixture) {
    let db = fx.connect().await;
    let now = 1_000_000;
    let p = pending(
        "example.org",
        "created1",
        "@alice:example.org",
        now + 60_000,
    );
    db.create_pending(&p).await.unwrap();
    db.create_pending(&pending(
        "example.org",
        "created2",
        "@alice:example.org",
        now + 60_000,
    ))
    .await
    .unwrap();
    db.create_pending(&pending(
        "example.org",
        "bobs",
        "@bob:example.org",
        now + 60_000,
    ))
    .await
    .unwrap();

    assert_eq!(
        db.get_pending("example.org", "created1").await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(db.get_pending("example.org", "nope").await.unwrap(), None);
    assert!(matches!(
        db.create_pending(&p).await,
        Err(Error::AlreadyExists { .. })
    ));

    assert_eq!(
        db.count_pending_for_user("@alice:example.org", now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.count_pending_for_user("@bob:example.org", now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.count_pending_for_user("@carol:example.org", now)
            .await
            .unwrap(),
        0
    );
    // At the expiry instant the rows no longer count.
    assert_eq!(
        db.count_pending_for_user("@alice:example.org", now + 60_000)
            .await
            .unwrap(),
        0
    );

    // Completing turns the pending row into media, atomically.
    let m = MediaRecord {
        user_id: Some("@alice:example.org".into()),
        ..media("example.org", "created1")
    };
    db.complete_pending(&m).await.unwrap();
    assert_eq!(
        db.get_pending("example.org", "created1").await.unwrap(),
        None
    );
    assert_eq!(
        db.get_media("example.org", "created1").await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        db.count_pending_for_user("@alice:example.org", now)
            .await
            .unwrap(),
        1
    );

    // A second upload to the same id is a conflict (409), not "unknown id" (404).
    assert!(matches!(
        db.complete_pending(&m).await,
        Err(Error::AlreadyExists { .. })
    ));
    // An id that is already media cannot be handed out again.
    assert!(matches!(
        db.create_pending(&pending(
            "example.org",
            "created1",
            "@alice:example.org",
            now + 1
        ))
        .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        db.get_pending("example.org", "created1").await.unwrap(),
        None
    );
    assert_eq!(db.media_count().await.unwrap(), 1);
}

async fn complete_pending_without_pending_row_inserts_nothing(fx: &Fixture) {
    let db = fx.connect().await;
    match db
        .complete_pending(&media("example.org", "never-created"))
        .await
    {
        Err(Error::NoPendingUpload { origin, media_id }) => {
            assert_eq!(
                (origin.as_str(), media_id.as_str()),
                ("example.org", "never-created")
            );
        }
        other => panic!("expected NoPendingUpload, got {other:?}"),
    }
    // The media insert of that transaction was rolled back.
    assert_eq!(
        db.get_media("example.org", "never-created").await.unwrap(),
        None
    );
    assert_eq!(db.media_count().await.unwrap(), 0);
}

async fn racing_completions_one_wins(fx: &Fixture) {
    let db = fx.connect().await;
    db.create_pending(&pending(
        "example.org",
        "race",
        "@alice:example.org",
        i64::MAX,
    ))
    .await
    .unwrap();
    let m = media("example.org", "race");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (db, m) = (db.clone(), m.clone());
            tokio::spawn(async move { db.complete_pending(&m).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error from a racing completion: {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(db.media_count().await.unwrap(), 1);
    assert_eq!(db.get_pending("example.org", "race").await.unwrap(), None);
}

/// Many writes at once (on SQLite: one writer, committed in groups). Each write stands or
/// fails on its own: completions of ids never created fail and leave no media row, while
/// the inserts and creations queued beside them all commit; of eight inserts of one id,
/// exactly one wins.
async fn concurrent_writes_commit_and_failed_ones_leave_nothing(fx: &Fixture) {
    const WRITERS: usize = 48;
    const SAME_ID: usize = 8;
    let db = fx.connect().await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("id{i}");
                match i % 3 {
                    0 => db.insert_media(&media("example.org", &id)).await,
                    1 => {
                        db.create_pending(&pending("example.org", &id, "@a:example.org", i64::MAX))
                            .await
                    }
                    _ => db.complete_pending(&media("example.org", &id)).await,
                }
            })
        })
        .chain((0..SAME_ID).map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.insert_media(&media("example.org", "same")).await })
        }))
        .collect();
    let mut same_won = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        if i >= WRITERS {
            match result {
                Ok(()) => same_won += 1,
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => panic!("unexpected error inserting a taken id: {e:?}"),
            }
            continue;
        }
        match (i % 3, result) {
            (2, Err(Error::NoPendingUpload { .. })) => {}
            (2, other) => panic!("completing id{i} without a pending row gave {other:?}"),
            (_, result) => result.unwrap(),
        }
    }
    assert_eq!(same_won, 1);
    assert_eq!(db.media_count().await.unwrap(), (WRITERS / 3 + 1) as u64);
    for i in 0..WRITERS {
        let id = format!("id{i}");
        let row = db.get_media("example.org", &id).await.unwrap();
        let pending = db.get_pending("example.org", &id).await.unwrap();
        assert_eq!(
            (row.is_some(), pending.is_some()),
            (i % 3 == 0, i % 3 == 1),
            "id{i}"
        );
    }
}

async fn expired_pending_sweep(fx: &Fixture) {
    let db = fx.connect().await;
    for (id, expires) in [("a", 100), ("b", 200), ("c", 300), ("d", 400)] {
        db.create_pending(&pending("example.org", id, "@u:example.org", expires))
            .await
            .unwrap();
    }
    assert_eq!(db.delete_expired_pending(50).await.unwrap(), 0);
    // Expiry is inclusive: a row expiring exactly now is gone.
    assert_eq!(db.delete_expired_pending(200).await.unwrap(), 2);
    assert_eq!(db.get_pending("example.org", "a").await.unwrap(), None);
    assert_eq!(db.get_pending("example.org", "b").await.unwrap(), None);
    assert!(db.get_pending("example.org", "c").await.unwrap().is_some());
    assert_eq!(
        db.count_pending_for_user("@u:example.org", 0)
            .await
            .unwrap(),
        2
    );
    assert_eq!(db.delete_expired_pending(200).await.unwrap(), 0);
    assert_eq!(db.delete_expired_pending(i64::MAX).await.unwrap(), 2);
    assert_eq!(
        db.count_pending_for_user("@u:example.org", 0)
            .await
            .unwrap(),
        0
    );
}

async fn migrations_are_idempotent(fx: &Fixture) {
    let first = fx.connect().await;
    first
        .insert_media(&media("example.org", "kept"))
        .await
        .unwrap();
    // A second process connecting while the first is open, then a restart.
    let second = fx.connect().await;
    assert_eq!(second.media_count().await.unwrap(), 1);
    first.close().await;
    second.close().await;
    let third = fx.connect().await;
    assert!(third
        .get_media("example.org", "kept")
        .await
        .unwrap()
        .is_some());
    assert_eq!(third.media_count().await.unwrap(), 1);
}

async fn oversized_size_is_rejected(fx: &Fixture) {
    let db = fx.connect().await;
    let m = MediaRecord {
        size_bytes: u64::MAX,
        ..media("example.org", "huge")
    };
    assert!(matches!(
        db.insert_media(&m).await,
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(db.media_count().await.unwrap(), 0);
}

async fn ping_answers_on_a_usable_database(fx: &Fixture) {
    let db = fx.connect().await;
    db.ping().await.unwrap();
}

#[tokio::test]
async fn ping_fails_once_the_sqlite_file_is_deleted_or_replaced() {
    let fx = Fixture::sqlite();
    let db = fx.connect().await;
    db.ping().await.unwrap();
    let path = std::path::PathBuf::from(fx.url().trim_start_matches("sqlite://"));
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    // Open connections would go on answering on the moved file (and a new pool connection
    // would create an empty one at the path): only the path's identity tells.
    assert!(matches!(db.ping().await, Err(Error::DatabaseFileGone(p)) if p == path));
    // A different file at the same path is not the database either.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(db.ping().await, Err(Error::DatabaseFileGone(_))));
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&moved, &path).unwrap();
    db.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_creates_file_in_wal_mode() {
    let fx = Fixture::sqlite();
    let db = fx.connect().await;
    assert_eq!(db.backend_name(), "sqlite");
    let path = fx.url().trim_start_matches("sqlite://").to_owned();
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path} was not created"
    );
    let pool = sqlx::SqlitePool::connect(&fx.url()).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn postgres_tables_live_in_the_search_path_schema() {
    let fx = Fixture::postgres().await;
    let db = fx.connect().await;
    assert_eq!(db.backend_name(), "postgres");
    let Fixture::Postgres(schema) = &fx else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(crate::common::POSTGRES_URL)
        .await
        .unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema.name)
    .fetch_all(&pool)
    .await
    .unwrap();
    tables.sort();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "content_claims",
            "media",
            "pending_uploads",
            "quarantined_hashes",
            "quarantined_origins",
            "thumbnails"
        ]
    );
    pool.close().await;
    db.close().await;
}

/// Upload claims live in an unlogged table on Postgres (their commit waits for no WAL
/// flush); connecting again (a restart, a second process) leaves it so.
#[tokio::test]
async fn postgres_claims_are_unlogged() {
    let fx = Fixture::postgres().await;
    let Fixture::Postgres(schema) = &fx else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(crate::common::POSTGRES_URL)
        .await
        .unwrap();
    let persistence = || {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relpersistence::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&schema.name)
        .bind("content_claims")
        .fetch_one(&pool)
    };
    let first = fx.connect().await;
    assert_eq!(persistence().await.unwrap(), "u");
    let second = fx.connect().await;
    assert_eq!(persistence().await.unwrap(), "u");
    pool.close().await;
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn unsupported_url_is_a_typed_error_without_secrets() {
    let err = Database::connect("mysql://root:hunter2@localhost/db", 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(&err, Error::UnsupportedDatabase(scheme) if scheme == "mysql"));
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn unreachable_postgres_fails_loudly() {
    // Port 1 is never a Postgres server.
    let result = Database::connect("postgres://postgres@127.0.0.1:1/test", 1).await;
    assert!(matches!(result, Err(Error::Database(_))));
}

async fn location_in_use_counts_rows_sharing_an_object(fx: &Fixture) {
    let db = fx.connect().await;
    let first = media("example.org", "first");
    assert!(!db
        .location_in_use("default", &first.location)
        .await
        .unwrap());
    db.insert_media(&first).await.unwrap();
    assert!(db
        .location_in_use("default", &first.location)
        .await
        .unwrap());
    assert!(
        !db.location_in_use("other", &first.location).await.unwrap(),
        "scoped to the datastore"
    );
    assert!(!db.location_in_use("default", "cd/cd/unused").await.unwrap());
}
