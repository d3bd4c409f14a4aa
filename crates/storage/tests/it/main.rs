//! Storage tests against real components: SQLite files in temp dirs, the machine's Postgres
//! (one schema per test), and real directories for the file datastore.

mod common;
mod content;
mod database;
mod datastore;
mod ids;
mod purge;
mod quarantine;
mod row_cache;
