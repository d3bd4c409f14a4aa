//! `bare-handlers`: the ceilings `scripts/download.py` compares media-repo's downloads with,
//! one bare actix-web handler per cache backend, served side by side by one process:
//!
//! * `GET /memory/{name}`: the file's bytes from process memory (read once at start);
//! * `GET /redis/{name}`: one redis-rs `GET` per request of the bytes stored under
//!   `bare:{name}` (written at start), no auth, no metadata; each worker thread has its own
//!   multiplexed connection, so no request crosses threads;
//! * `GET /file/{name}`: the file streamed from disk (`tokio::fs` + `ReaderStream`, the
//!   same 64 KiB reads media-repo's datastore path uses).
//!
//! `{name}` is a file name in `--dir` (`[A-Za-z0-9._-]`, no leading dot). The server has as
//! many workers as media-repo (one per core) and sets TCP_NODELAY like it. Nothing here is
//! a media-repo component: it is the baseline only (like `cache-bench`'s plain redis-rs).
//!
//! Run: `bare-handlers --bind 127.0.0.1:PORT --dir DIR [--redis redis://127.0.0.1:PORT]`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use redis::aio::MultiplexedConnection;
use tokio_util::io::ReaderStream;

/// Read size for streamed files: media-repo's `FILE_READ_CHUNK`.
const FILE_READ_CHUNK: usize = 64 * 1024;
/// Prefix of the Redis keys the files are stored under.
const KEY_PREFIX: &str = "bare:";

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "Bare actix-web download handlers: the baseline of crates/bench/scripts/download.py"
)]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long)]
    bind: String,
    /// Directory whose files are served (all of them are loaded into memory at start).
    #[arg(long)]
    dir: PathBuf,
    /// Redis server the `/redis/` handler reads from; its files are written there at start.
    #[arg(long)]
    redis: Option<String>,
}

struct Shared {
    dir: PathBuf,
    memory: HashMap<String, Bytes>,
    redis: Option<redis::Client>,
}

thread_local! {
    /// This worker's connection, made on its first `/redis/` request (on its own runtime,
    /// so the connection's driver task runs on the same thread as the handler).
    static CONNECTION: RefCell<Option<MultiplexedConnection>> = const { RefCell::new(None) };
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

async fn from_memory(name: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    match shared.memory.get(name.as_str()) {
        Some(bytes) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn connection(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    if let Some(conn) = CONNECTION.with(|c| c.borrow().clone()) {
        return Ok(conn);
    }
    let conn = client.get_multiplexed_async_connection().await?;
    CONNECTION.with(|c| *c.borrow_mut() = Some(conn.clone()));
    Ok(conn)
}

async fn from_redis(name: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let Some(client) = shared.redis.as_ref() else {
        return HttpResponse::NotFound().finish();
    };
    let mut conn = match connection(client).await {
        Ok(conn) => conn,
        Err(_) => return HttpResponse::ServiceUnavailable().finish(),
    };
    let key = format!("{KEY_PREFIX}{name}");
    let got: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(&key).query_async(&mut conn).await;
    match got {
        Ok(Some(bytes)) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

async fn from_file(name: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    if !valid_name(&name) {
        return HttpResponse::NotFound().finish();
    }
    let file = match tokio::fs::File::open(shared.dir.join(name.as_str())).await {
        Ok(file) => file,
        Err(_) => return HttpResponse::NotFound().finish(),
    };
    let len = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return HttpResponse::InternalServerError().finish(),
    };
    let stream = ReaderStream::with_capacity(file, FILE_READ_CHUNK);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(SizedStream::new(len, stream))
}

/// Every servable file of `dir`, by name.
fn load(dir: &PathBuf) -> Result<HashMap<String, Bytes>> {
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_name(&name) && entry.file_type()?.is_file() {
            files.insert(name, Bytes::from(std::fs::read(entry.path())?));
        }
    }
    Ok(files)
}

async fn store_in_redis(client: &redis::Client, files: &HashMap<String, Bytes>) -> Result<()> {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    for (name, bytes) in files {
        let _: () = redis::cmd("SET")
            .arg(format!("{KEY_PREFIX}{name}"))
            .arg(bytes.as_ref())
            .query_async(&mut conn)
            .await
            .with_context(|| format!("storing {name} in Redis"))?;
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let memory = load(&args.dir)?;
    let redis = match &args.redis {
        Some(url) => {
            let client = redis::Client::open(url.as_str()).context("Redis URL")?;
            store_in_redis(&client, &memory).await?;
            Some(client)
        }
        None => None,
    };
    let shared = web::Data::from(Arc::new(Shared {
        dir: args.dir.clone(),
        memory,
        redis,
    }));
    eprintln!("bare-handlers listening on {}", args.bind);
    HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/memory/{name}", web::get().to(from_memory))
            .route("/redis/{name}", web::get().to(from_redis))
            .route("/file/{name}", web::get().to(from_file))
    })
    .tcp_nodelay(true)
    .bind(&args.bind)
    .with_context(|| format!("binding {}", args.bind))?
    .run()
    .await
    .context("serving")
}
