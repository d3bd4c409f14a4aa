//! Minimal blocking HTTP for the harness (health checks, /metrics) and for tests.
//!
//! Every request runs on its own short-lived thread: reqwest's blocking client panics
//! when used or dropped on a thread that is inside an async runtime, and tests written
//! as `#[tokio::test]` / `#[actix_rt::test]` are exactly that.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;

/// One shared client (its connection pool and runtime thread live for the whole test
/// process), built on a plain thread for the reason in the module doc.
fn client() -> anyhow::Result<&'static reqwest::blocking::Client> {
    static CLIENT: OnceLock<Result<reqwest::blocking::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            std::thread::spawn(|| {
                reqwest::blocking::Client::builder()
                    .build()
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("building the HTTP client panicked".to_owned()))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot build HTTP client: {e}"))
}

/// Status and body of one reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url`, whole request bounded by `timeout`. Any status is Ok; only transport
/// failures are errors.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<Reply> {
    let client = client()?;
    let url = url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<Reply> {
        let resp = client
            .get(&url)
            .timeout(timeout)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .with_context(|| format!("reading body of GET {url}"))?
            .to_vec();
        Ok(Reply { status, body })
    })
    .join()
    .unwrap_or_else(|_| Err(anyhow::anyhow!("HTTP request thread panicked")))
}
