//! `upload-load`: the HTTP upload client of `scripts/upload.py`. N keep-alive connections
//! each POST one body after another for a fixed time; it prints req/s and latency
//! percentiles as one JSON object.
//!
//! Why not wrk: wrk's Lua `request()` has to build every distinct body as a new string
//! (two 1 MiB copies into fresh memory per request), which cost it 3–7 ms of a core per
//! 1 MiB upload on this project's 2-core machines, so at 1 MiB the client, not the server,
//! set the pace (answers sat unread in its sockets; docs/benchmarks.md). Here each
//! connection owns one request buffer (head and body) and rewrites only the body's first 16
//! bytes per request (`{connection:08x}{counter:08x}`, as the wrk script did), so every
//! upload still stores new content while the client's own cost is the socket write.
//!
//! Run: `upload-load --url http://127.0.0.1:PORT/path?query --token T --size BYTES
//! [--connections 16] [--threads 2] [--seconds 10]`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request that has not been answered after this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the body rewritten per request to make it distinct.
const DISTINCT_PREFIX_BYTES: usize = 16;
/// Largest response head accepted (media-repo's and Synapse's are well under 1 KiB).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest response body accepted (an upload's answer is a small JSON object).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(about = "HTTP upload load generator of crates/bench/scripts/upload.py")]
struct Args {
    /// `http://host:port/path?query` to POST to (loopback only).
    #[arg(long)]
    url: String,
    /// Access token sent as `Authorization: Bearer`.
    #[arg(long)]
    token: String,
    /// Body size in bytes.
    #[arg(long)]
    size: usize,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// How long to send requests for.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    /// Microseconds per answered request with a 2xx status.
    latencies_us: Vec<u32>,
    /// Requests answered with another status.
    bad_status: u64,
    /// Requests that failed at the socket or timed out (the connection is then reopened).
    errors: u64,
    /// The first failure, to show what went wrong.
    first_failure: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let target = Target::parse(&args.url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let body = pseudo_random_bytes(args.size);
    let duration = Duration::from_secs_f64(args.seconds);
    let (tallies, elapsed) = runtime.block_on(async {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + duration;
        let tasks: Vec<_> = (0..args.connections)
            .map(|index| {
                let request = target.request(&args.token, &body, index);
                tokio::spawn(connection_loop(target.clone(), request, deadline))
            })
            .collect();
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            tallies.push(task.await.context("a connection task panicked")?);
        }
        Ok::<_, anyhow::Error>((tallies, started.elapsed()))
    })?;
    print_summary(&tallies, elapsed);
    Ok(())
}

/// Host, port and request target of a plain-HTTP URL.
#[derive(Clone)]
struct Target {
    host_port: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .context("only http:// URLs are supported")?;
        let (host_port, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if host_port.is_empty() {
            bail!("no host in {url}");
        }
        Ok(Target {
            host_port: host_port.to_owned(),
            path_and_query: path.to_owned(),
        })
    }

    /// One connection's request buffer: the head, then the body.
    fn request(&self, token: &str, body: &[u8], connection: usize) -> ConnectionRequest {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            self.path_and_query,
            self.host_port,
            token,
            body.len()
        );
        let mut bytes = Vec::with_capacity(head.len() + body.len());
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(body);
        ConnectionRequest {
            body_at: head.len(),
            bytes,
            connection,
            counter: 0,
        }
    }
}

/// A connection's reusable request: only the body's distinct prefix changes between sends.
struct ConnectionRequest {
    bytes: Vec<u8>,
    body_at: usize,
    connection: usize,
    counter: u64,
}

impl ConnectionRequest {
    /// The next request's bytes, its body made distinct from every other one sent.
    fn next(&mut self) -> &[u8] {
        self.counter += 1;
        let prefix = format!("{:08x}{:08x}", self.connection, self.counter);
        let room = (self.bytes.len() - self.body_at).min(DISTINCT_PREFIX_BYTES);
        self.bytes[self.body_at..self.body_at + room].copy_from_slice(&prefix.as_bytes()[..room]);
        &self.bytes
    }
}

/// Sends requests on one connection until `deadline`, reconnecting after a failure.
async fn connection_loop(
    target: Target,
    mut request: ConnectionRequest,
    deadline: tokio::time::Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut read_buf = Vec::with_capacity(MAX_RESPONSE_HEAD);
    while tokio::time::Instant::now() < deadline {
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            REQUEST_TIMEOUT,
            one_request(&target, &mut stream, request.next(), &mut read_buf),
        )
        .await;
        let outcome = match attempt {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                tally.latencies_us.push(micros);
            }
            Ok(status) => {
                tally.bad_status += 1;
                tally
                    .first_failure
                    .get_or_insert_with(|| format!("status {status}"));
            }
            Err(err) => {
                tally.errors += 1;
                tally
                    .first_failure
                    .get_or_insert_with(|| format!("{err:#}"));
                stream = None;
            }
        }
    }
    tally
}

/// Writes one request and reads its whole answer; the status code.
async fn one_request(
    target: &Target,
    stream: &mut Option<TcpStream>,
    request: &[u8],
    read_buf: &mut Vec<u8>,
) -> Result<u16> {
    if stream.is_none() {
        let connected = TcpStream::connect(&target.host_port)
            .await
            .with_context(|| format!("connecting to {}", target.host_port))?;
        connected.set_nodelay(true)?;
        *stream = Some(connected);
    }
    let Some(conn) = stream.as_mut() else {
        bail!("no connection");
    };
    conn.write_all(request).await.context("sending")?;
    let (status, keep_alive) = read_response(conn, read_buf).await?;
    if !keep_alive {
        *stream = None;
    }
    Ok(status)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body); its status and whether the
/// connection stays open.
async fn read_response<R: AsyncRead + Unpin>(
    conn: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(u16, bool)> {
    buf.clear();
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            bail!("response head longer than {MAX_RESPONSE_HEAD} bytes");
        }
        read_more(conn, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            if buf.len() - head_end > MAX_RESPONSE_BODY {
                bail!("chunked response body longer than {MAX_RESPONSE_BODY} bytes");
            }
            read_more(conn, buf).await?;
        }
    } else {
        let length = content_length.unwrap_or(0);
        if length > MAX_RESPONSE_BODY {
            bail!("response body of {length} bytes");
        }
        while buf.len() < head_end + length {
            read_more(conn, buf).await?;
        }
    }
    Ok((status, keep_alive))
}

async fn read_more<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 4096];
    let read = conn.read(&mut chunk).await.context("reading the answer")?;
    if read == 0 {
        bail!("the server closed the connection");
    }
    buf.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Incompressible filler (xorshift64*), so no layer can shrink what the servers store.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn print_summary(tallies: &[Tally], elapsed: Duration) {
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile_ms = |pct: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((pct / 100.0) * latencies.len() as f64).ceil() as usize;
        f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
    };
    let ok = latencies.len() as f64;
    let failure = tallies.iter().find_map(|t| t.first_failure.as_deref());
    let summary = serde_json::json!({
        "requests": latencies.len(),
        "rps": ok / elapsed.as_secs_f64(),
        "p50": percentile_ms(50.0),
        "p90": percentile_ms(90.0),
        "p99": percentile_ms(99.0),
        "max": percentile_ms(100.0),
        "bad_status": tallies.iter().map(|t| t.bad_status).sum::<u64>(),
        "errors": tallies.iter().map(|t| t.errors).sum::<u64>(),
        "first_failure": failure,
    });
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_splits_into_host_and_target() {
        let target = Target::parse("http://127.0.0.1:8008/_matrix/media/v3/upload?filename=a.bin")
            .expect("a plain http URL");
        assert_eq!(target.host_port, "127.0.0.1:8008");
        assert_eq!(
            target.path_and_query,
            "/_matrix/media/v3/upload?filename=a.bin"
        );
        assert_eq!(
            Target::parse("http://[::1]:80")
                .expect("no path")
                .path_and_query,
            "/"
        );
        assert!(Target::parse("https://127.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn responses_are_read_whole_by_length_or_chunks() {
        let mut buf = Vec::new();
        let mut sized: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"a\": \"mxc\"}";
        assert_eq!(
            read_response(&mut sized, &mut buf).await.unwrap(),
            (200, true)
        );
        assert!(sized.is_empty(), "the whole body was read");

        let mut chunked: &[u8] =
            b"HTTP/1.1 413 Payload Too Large\r\nTransfer-Encoding: chunked\r\n\
            Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            read_response(&mut chunked, &mut buf).await.unwrap(),
            (413, false)
        );
        assert!(chunked.is_empty());

        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
        assert!(read_response(&mut cut, &mut buf).await.is_err());
    }

    #[test]
    fn every_request_body_is_distinct_and_only_its_prefix_changes() {
        let body = pseudo_random_bytes(1000);
        let target = Target::parse("http://127.0.0.1:1/up").expect("url");
        let mut request = target.request("tok", &body, 3);
        let first = request.next().to_vec();
        let second = request.next().to_vec();
        assert_ne!(first, second);
        let head_len = first.len() - body.len();
        assert!(first[..head_len].ends_with(b"Content-Length: 1000\r\n\r\n"));
        assert_eq!(&first[head_len..head_len + 16], b"0000000300000001");
        assert_eq!(&second[head_len..head_len + 16], b"0000000300000002");
        assert_eq!(first[head_len + 16..], body[16..]);
    }
}
