//! Fixtures: a database of either backend, isolated per test and cleaned up even when the
//! test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mr_storage::{Database, FileDatastore};
use sqlx::Connection;
use tempfile::TempDir;

/// The machine's Postgres. Tests fail (never skip) when it is unreachable.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where one test's database lives.
pub enum Fixture {
    Sqlite { _dir: TempDir, url: String },
    Postgres(PgSchema),
}

impl Fixture {
    /// A SQLite file two directories deep inside a fresh temp dir (the directories do not
    /// exist yet: `connect` must create them).
    pub fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/dir/meta.db", dir.path().display());
        Fixture::Sqlite { _dir: dir, url }
    }

    pub async fn postgres() -> Fixture {
        Fixture::Postgres(PgSchema::create().await)
    }

    pub fn url(&self) -> String {
        match self {
            Fixture::Sqlite { url, .. } => url.clone(),
            Fixture::Postgres(schema) => schema.url(),
        }
    }

    pub async fn connect(&self) -> Database {
        Database::connect(&self.url(), 4).await.unwrap()
    }
}

/// A Postgres schema made for one test and dropped (with everything in it) on drop.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    async fn create() -> PgSchema {
        let name = format!(
            "mr_storage_test_{}",
            mr_storage::random_media_id().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(POSTGRES_URL)
            .await
            .unwrap_or_else(|e| {
                panic!("Postgres at {POSTGRES_URL} is required for these tests: {e}")
            });
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        PgSchema { name }
    }

    /// The test URL, selecting the schema the way operators would: `options=-c search_path=`.
    pub fn url(&self) -> String {
        format!("{POSTGRES_URL}?options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread
        // with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(POSTGRES_URL).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

/// Generates `sqlite::<test>` and `postgres::<test>` for each body `async fn(&Fixture)`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            use crate::common::Fixture;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&Fixture::sqlite()).await;
                }
            )*
        }
        mod postgres {
            use crate::common::Fixture;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&Fixture::postgres().await).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files in `store`'s temp dir.
pub fn temp_files(store: &FileDatastore) -> Vec<PathBuf> {
    files_under(&store.root().join("tmp"))
}

/// Waits until the temp dir is empty: a dropped writer or staged object removes its temp
/// file on the blocking pool, a moment after the drop (`writer.rs`, `drop_off_thread`).
pub async fn wait_for_no_temp_files(store: &FileDatastore) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !temp_files(store).is_empty() {
        assert!(
            Instant::now() < deadline,
            "temp files left behind: {:?}",
            temp_files(store)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
