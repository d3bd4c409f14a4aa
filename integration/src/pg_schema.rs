//! `PgSchema`: a private schema in the machine's Postgres, so Postgres-backed tests can
//! run in parallel without seeing each other's tables.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::process::run_with_timeout;

pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;
pub const PG_USER: &str = "postgres";
pub const PG_DATABASE: &str = "test";

/// Upper bound for one `psql` call, so a wedged server fails the test instead of hanging it.
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes names unique among the schemas created by this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh schema in database `test` on 127.0.0.1:5432, dropped with CASCADE on drop.
pub struct PgSchema {
    name: String,
}

impl PgSchema {
    /// Creates the schema with `psql`; fails (never skips) when Postgres or psql is absent.
    pub fn create() -> anyhow::Result<PgSchema> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // pid + counter is unique on the machine at one time; the clock part keeps a
        // leftover schema of a killed earlier run (same pid reused) from clashing.
        let name = format!(
            "it_{}_{}_{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        psql(None, &format!("CREATE SCHEMA {name}")).with_context(|| {
            format!(
                "creating schema {name} in Postgres database {PG_DATABASE} at {PG_HOST}:{PG_PORT} as {PG_USER} \
                 (these tests need a running Postgres with trust auth and the psql CLI)"
            )
        })?;
        Ok(PgSchema { name })
    }

    /// Same as [`PgSchema::create`].
    pub fn new() -> anyhow::Result<PgSchema> {
        Self::create()
    }

    /// The schema's name (`it_...`, safe to splice into SQL unquoted).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D<schema>`:
    /// every connection made from this URL sees only this schema by default.
    pub fn url(&self) -> String {
        format!(
            "postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}?options=-c%20search_path%3D{}",
            self.name
        )
    }

    /// Runs `sql` through `psql -At` with the search path set to this schema and returns
    /// its stdout trimmed (unaligned, tuples only: one row per line, `|` between columns).
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        psql(Some(&self.name), sql)
    }

    /// True if the schema exists right now.
    pub fn exists(&self) -> anyhow::Result<bool> {
        schema_exists(&self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = psql(
            None,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            eprintln!(
                "integration: could not drop Postgres schema {}: {e:#}",
                self.name
            );
        }
    }
}

/// True if a schema with this name exists in the test database.
pub fn schema_exists(name: &str) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{}'",
        name.replace('\'', "''")
    );
    Ok(psql(None, &sql)? == "1")
}

fn psql(search_path: Option<&str>, sql: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
            "-U",
            PG_USER,
            "-d",
            PG_DATABASE,
        ])
        .args(["-c", sql])
        // Never prompt for a password: with trust auth none is needed, and a prompt would
        // hang the test.
        .arg("-w");
    if let Some(schema) = search_path {
        cmd.env("PGOPTIONS", format!("-c search_path={schema}"));
    }
    run_with_timeout(cmd, PSQL_TIMEOUT).with_context(|| format!("psql -c {sql:?}"))
}
