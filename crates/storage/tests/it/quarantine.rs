//! Quarantine in the database, each test body on SQLite and on Postgres.

use mr_storage::quarantine::MediaOrder;
use mr_storage::{Database, MediaRecord};

use crate::common::{on_both_backends, Fixture};

on_both_backends!(
    quarantine_one_and_lift_it,
    user_quarantine_skips_protected_and_other_users,
    hash_quarantine_marks_copies_and_new_rows,
    origin_quarantine_marks_its_media_and_new_rows,
    withdraw_only_removes_quarantined_rows,
    user_media_pages_in_order,
);

const ADMIN: &str = "@admin:example.org";

fn media(origin: &str, media_id: &str, user: Option<&str>, sha: &str) -> MediaRecord {
    MediaRecord {
        origin: origin.to_owned(),
        media_id: media_id.to_owned(),
        user_id: user.map(str::to_owned),
        content_type: "image/png".to_owned(),
        upload_name: Some(format!("{media_id}.png")),
        size_bytes: media_id.len() as u64,
        sha256: sha.repeat(32),
        datastore_id: "default".to_owned(),
        location: format!("{sha}/{sha}/{}", sha.repeat(32)),
        created_at_ms: 1_700_000_000_000 + media_id.len() as i64,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

async fn quarantined_by(db: &Database, origin: &str, id: &str) -> Option<String> {
    db.get_media(origin, id)
        .await
        .unwrap()
        .unwrap()
        .quarantined_by
}

async fn quarantine_one_and_lift_it(fx: &Fixture) {
    let db = fx.connect().await;
    db.insert_media(&media("example.org", "a", Some("@u:example.org"), "aa"))
        .await
        .unwrap();
    let marked = db
        .quarantine_media("example.org", "a", ADMIN)
        .await
        .unwrap();
    assert_eq!(marked.unwrap().quarantined_by.as_deref(), Some(ADMIN));
    assert_eq!(
        quarantined_by(&db, "example.org", "a").await.as_deref(),
        Some(ADMIN)
    );
    // Already quarantined, or unknown: nothing marked.
    assert!(db
        .quarantine_media("example.org", "a", ADMIN)
        .await
        .unwrap()
        .is_none());
    assert!(db
        .quarantine_media("example.org", "zz", ADMIN)
        .await
        .unwrap()
        .is_none());
    let lifted = db.unquarantine_media("example.org", "a").await.unwrap();
    assert_eq!(lifted.unwrap().quarantined_by, None);
    assert_eq!(quarantined_by(&db, "example.org", "a").await, None);
    assert!(db
        .unquarantine_media("example.org", "a")
        .await
        .unwrap()
        .is_none());
    // Protected media is never marked.
    assert!(db
        .set_safe_from_quarantine("example.org", "a", true)
        .await
        .unwrap());
    assert!(db
        .quarantine_media("example.org", "a", ADMIN)
        .await
        .unwrap()
        .is_none());
    assert!(
        db.get_media("example.org", "a")
            .await
            .unwrap()
            .unwrap()
            .safe_from_quarantine
    );
    assert!(!db
        .set_safe_from_quarantine("example.org", "zz", true)
        .await
        .unwrap());
}

async fn user_quarantine_skips_protected_and_other_users(fx: &Fixture) {
    let db = fx.connect().await;
    for (id, user) in [
        ("a1", "@u:example.org"),
        ("a2", "@u:example.org"),
        ("b1", "@v:example.org"),
    ] {
        db.insert_media(&media("example.org", id, Some(user), "ab"))
            .await
            .unwrap();
    }
    db.set_safe_from_quarantine("example.org", "a2", true)
        .await
        .unwrap();
    let marked = db
        .quarantine_user_media("@u:example.org", ADMIN)
        .await
        .unwrap();
    let ids: Vec<&str> = marked.iter().map(|m| m.media_id.as_str()).collect();
    assert_eq!(ids, ["a1"]);
    assert_eq!(quarantined_by(&db, "example.org", "a2").await, None);
    assert_eq!(quarantined_by(&db, "example.org", "b1").await, None);
}

async fn hash_quarantine_marks_copies_and_new_rows(fx: &Fixture) {
    let db = fx.connect().await;
    let sha = "cd".repeat(32);
    db.insert_media(&media("example.org", "x1", Some("@u:example.org"), "cd"))
        .await
        .unwrap();
    db.insert_media(&media("remote.test", "x2", None, "cd"))
        .await
        .unwrap();
    db.insert_media(&media("example.org", "x3", Some("@u:example.org"), "cd"))
        .await
        .unwrap();
    db.insert_media(&media("example.org", "other", Some("@u:example.org"), "ef"))
        .await
        .unwrap();
    db.set_safe_from_quarantine("example.org", "x3", true)
        .await
        .unwrap();

    assert!(!db.is_hash_quarantined(&sha).await.unwrap());
    assert!(!db.is_content_quarantined(&sha).await.unwrap());
    // One quarantined media makes its bytes refused too; lifting it accepts them again.
    db.quarantine_media("example.org", "other", ADMIN)
        .await
        .unwrap();
    assert!(db.is_content_quarantined(&"ef".repeat(32)).await.unwrap());
    db.unquarantine_media("example.org", "other").await.unwrap();
    assert!(!db.is_content_quarantined(&"ef".repeat(32)).await.unwrap());
    let marked = db.quarantine_hash(&sha, ADMIN, 1).await.unwrap();
    assert_eq!(marked.len(), 2);
    assert!(db.is_hash_quarantined(&sha).await.unwrap());
    assert!(db.is_content_quarantined(&sha).await.unwrap());
    let marker = format!("hash:{sha}");
    assert_eq!(
        quarantined_by(&db, "remote.test", "x2").await,
        Some(marker.clone())
    );
    assert_eq!(quarantined_by(&db, "example.org", "x3").await, None);
    assert_eq!(quarantined_by(&db, "example.org", "other").await, None);
    // Twice is fine.
    assert!(db.quarantine_hash(&sha, ADMIN, 2).await.unwrap().is_empty());

    // A row written later inherits the standing quarantine.
    db.insert_media(&media("example.org", "x4", Some("@u:example.org"), "cd"))
        .await
        .unwrap();
    assert_eq!(
        db.apply_standing_quarantine("example.org", "x4")
            .await
            .unwrap(),
        Some(marker.clone())
    );
    assert_eq!(
        db.apply_standing_quarantine("example.org", "other")
            .await
            .unwrap(),
        None
    );

    // A media quarantined by an admin keeps its own mark when the hash is lifted.
    db.insert_media(&media("example.org", "x5", Some("@u:example.org"), "cd"))
        .await
        .unwrap();
    db.quarantine_media("example.org", "x5", ADMIN)
        .await
        .unwrap();
    let lifted = db.unquarantine_hash(&sha).await.unwrap();
    assert_eq!(lifted.len(), 3);
    assert!(!db.is_hash_quarantined(&sha).await.unwrap());
    for id in ["x1", "x4"] {
        assert_eq!(quarantined_by(&db, "example.org", id).await, None);
    }
    assert_eq!(
        quarantined_by(&db, "example.org", "x5").await.as_deref(),
        Some(ADMIN)
    );
}

async fn origin_quarantine_marks_its_media_and_new_rows(fx: &Fixture) {
    let db = fx.connect().await;
    db.insert_media(&media("bad.test", "r1", None, "11"))
        .await
        .unwrap();
    db.insert_media(&media("good.test", "r2", None, "11"))
        .await
        .unwrap();
    let marked = db.quarantine_origin("bad.test", ADMIN, 1).await.unwrap();
    assert_eq!(marked.len(), 1);
    assert!(db.is_origin_quarantined("bad.test").await.unwrap());
    assert!(!db.is_origin_quarantined("good.test").await.unwrap());
    assert_eq!(
        quarantined_by(&db, "bad.test", "r1").await.as_deref(),
        Some("origin:bad.test")
    );
    db.insert_media(&media("bad.test", "r3", None, "22"))
        .await
        .unwrap();
    assert_eq!(
        db.apply_standing_quarantine("bad.test", "r3")
            .await
            .unwrap()
            .as_deref(),
        Some("origin:bad.test")
    );
    let lifted = db.unquarantine_origin("bad.test").await.unwrap();
    assert_eq!(lifted.len(), 2);
    assert_eq!(quarantined_by(&db, "bad.test", "r1").await, None);
    assert!(!db.is_origin_quarantined("bad.test").await.unwrap());
}

async fn withdraw_only_removes_quarantined_rows(fx: &Fixture) {
    let db = fx.connect().await;
    db.insert_media(&media("example.org", "w1", Some("@u:example.org"), "aa"))
        .await
        .unwrap();
    assert!(!db
        .withdraw_quarantined_media("example.org", "w1")
        .await
        .unwrap());
    db.quarantine_media("example.org", "w1", ADMIN)
        .await
        .unwrap();
    assert!(db
        .withdraw_quarantined_media("example.org", "w1")
        .await
        .unwrap());
    assert!(db.get_media("example.org", "w1").await.unwrap().is_none());
}

async fn user_media_pages_in_order(fx: &Fixture) {
    let db = fx.connect().await;
    // Lengths of the ids give distinct sizes and creation times.
    for id in ["p", "pp", "ppp", "pppp", "ppppp"] {
        db.insert_media(&media("example.org", id, Some("@u:example.org"), "aa"))
            .await
            .unwrap();
    }
    db.insert_media(&media("example.org", "q", Some("@v:example.org"), "aa"))
        .await
        .unwrap();
    let (page, total) = db
        .user_media_page("@u:example.org", 0, 2, MediaOrder::CreatedTs, true)
        .await
        .unwrap();
    assert_eq!(total, 5);
    let ids: Vec<&str> = page.iter().map(|m| m.media_id.as_str()).collect();
    assert_eq!(ids, ["ppppp", "pppp"]);
    let (page, _) = db
        .user_media_page("@u:example.org", 4, 2, MediaOrder::MediaLength, false)
        .await
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|m| m.media_id.as_str()).collect();
    assert_eq!(ids, ["ppppp"]);
    let (page, total) = db
        .user_media_page("@nobody:example.org", 0, 10, MediaOrder::MediaId, false)
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 0);
}
