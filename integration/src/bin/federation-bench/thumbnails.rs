//! `federation-bench --thumbnails`: thumbnails of fresh uploads, media-repo against
//! Synapse's own media repo on the same machine.
//!
//! Setup: one `FederatingSynapse` with its media repo on (the comparison; it also checks
//! the access tokens media-repo is shown), and media-repo (release build, SQLite, file
//! datastore, `cache.backend: memory`, the default thumbnail sizes, which are Synapse's)
//! serving that homeserver. Clients talk to media-repo's port and Synapse's client port
//! straight (plain HTTP on loopback).
//!
//! Synapse makes its thumbnails while handling the upload (the upload answers when they are
//! stored); media-repo answers the upload first and makes the configured sizes in the
//! background, and a request for a size not stored yet waits for (or joins) its generation.
//! So the cold number is the time from sending the upload to having both the 96×96 crop and
//! the 800×600 scale thumbnail: upload, then the two GETs one after the other, each retried
//! every 20 ms for up to 10 s on 404, 429 or 5xx (the retries are counted and printed).
//!
//! Per image kind (a 4000×3000 JPEG, i.e. 12 megapixels, with strong noise, ~9 MiB; the
//! same with a typical phone photo's detail, ~3.5 MiB, for context; then a 4000×3000 PNG) and round,
//! a fresh image (gradients plus random noise, new seed) is uploaded to each server, which
//! one goes first alternating. Then `wrk -t2 -c16 -d5s` on the 96×96 crop of the last
//! JPEG, already stored, with the access token as a header. Peak RSS (VmHWM) of media-repo
//! and of Synapse's Python process is read before and after the JPEG rounds (which run
//! first), after media-repo's background generations of the round have finished.

use std::io::Cursor;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ImageEncoder as _, RgbImage};
use integration::federated_repo::{repo_yaml, trusting};
use integration::{FederatingSynapse, MediaRepo, TestCa};
use rand::{RngCore as _, SeedableRng as _};
use reqwest::blocking::Client;

use crate::{
    cmdline, kill_on_signal, load_average, log, median, mib, remove_on_signal, spread, utc_now,
    Rss, REQUEST_TIMEOUT,
};

/// The test images' size: 12 megapixels.
const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;
/// `max_upload_size` of the Synapse (its default, 50M, would do; this leaves room).
const SYNAPSE_MAX_UPLOAD_BYTES: u64 = 128 << 20;
/// How long a thumbnail GET answered 404, 429 or 5xx is retried, and how often.
const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(20);
/// How long to wait for media-repo's background generations of a round to finish.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// wrk's arguments besides the header and URL.
const WRK_ARGS: [&str; 3] = ["-t2", "-c16", "-d5s"];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Jpeg,
    /// A JPEG with a typical phone photo's detail (~3.5 MiB at 12 MP), for context: the
    /// goal is measured on [`Kind::Jpeg`], whose noise makes it ~2.5× as many bytes to
    /// entropy-decode.
    TypicalJpeg,
    Png,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Jpeg, Kind::TypicalJpeg, Kind::Png];

    fn label(self) -> &'static str {
        match self {
            Kind::Jpeg => "JPEG 4000×3000 (12 MP)",
            Kind::TypicalJpeg => "JPEG 4000×3000, typical detail (context)",
            Kind::Png => "PNG 4000×3000",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Kind::Jpeg | Kind::TypicalJpeg => "image/jpeg",
            Kind::Png => "image/png",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Kind::Jpeg | Kind::TypicalJpeg => "bench.jpg",
            Kind::Png => "bench.png",
        }
    }
}

#[derive(Clone, Copy)]
enum Server {
    Repo,
    Synapse,
}

impl Server {
    const ALL: [Server; 2] = [Server::Repo, Server::Synapse];

    fn name(self) -> &'static str {
        match self {
            Server::Repo => "media-repo",
            Server::Synapse => "Synapse",
        }
    }
}

/// A thumbnail asked for: width, height, method.
type Size = (u32, u32, &'static str);
const CROP: Size = (96, 96, "crop");
const SCALE: Size = (800, 600, "scale");

/// One cold measurement.
struct Cold {
    /// Until the upload's answer.
    upload: Duration,
    /// Until both thumbnails were served.
    both: Duration,
    /// Thumbnail GETs answered 404, 429 or 5xx and retried.
    retries: usize,
}

struct Stack {
    repo: MediaRepo,
    synapse: FederatingSynapse,
    _ca: TestCa,
    token: String,
    http: Client,
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let started_at = utc_now();
    let load_before = load_average();
    log("starting Synapse (media repo on) and media-repo");
    let stack = Stack::start()?;
    log(&format!(
        "measuring media-repo pid {} ({}) and Synapse pid {} ({})",
        stack.repo.pid(),
        cmdline(stack.repo.pid())?,
        stack.synapse.pid(),
        cmdline(stack.synapse.pid())?
    ));
    let synapse_cmd = cmdline(stack.synapse.pid())?;
    ensure!(
        synapse_cmd.contains("python") && synapse_cmd.contains("synapse.app.homeserver"),
        "Synapse's pid is not its Python process: {synapse_cmd}"
    );

    log("warming up (tokens, connections, Pillow)");
    let small = encode(Kind::Jpeg, &image(Kind::Jpeg, 640, 480, 1))?;
    for server in Server::ALL {
        stack
            .cold(server, Kind::Jpeg, small.clone())
            .with_context(|| format!("warm-up on {}", server.name()))?;
    }
    stack.wait_for_background()?;

    let mut cold: Vec<(Kind, [Vec<Cold>; 2])> = Vec::new();
    let mut rss = [[Rss { peak_kib: 0 }; 2]; 2];
    let mut last_jpeg = [String::new(), String::new()];
    let mut seed = 1000;
    for kind in Kind::ALL {
        if kind == Kind::Jpeg {
            rss[0] = [stack.rss(Server::Repo)?, stack.rss(Server::Synapse)?];
        }
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                seed += 1;
                let bytes = encode(kind, &image(kind, WIDTH, HEIGHT, seed))?;
                let size = bytes.len();
                let server = Server::ALL[i];
                let (media_id, timing) = stack.cold(server, kind, bytes)?;
                if matches!(server, Server::Repo) {
                    stack.wait_for_background()?;
                }
                log(&format!(
                    "{} ({:.1} MiB) on {}: round {}: upload answered {:.3} s, both thumbnails {:.3} s, {} retries",
                    kind.label(),
                    size as f64 / 1048576.0,
                    server.name(),
                    round + 1,
                    timing.upload.as_secs_f64(),
                    timing.both.as_secs_f64(),
                    timing.retries
                ));
                times[i].push(timing);
                if kind == Kind::Jpeg {
                    last_jpeg[i] = media_id;
                }
            }
        }
        if kind == Kind::Jpeg {
            rss[1] = [stack.rss(Server::Repo)?, stack.rss(Server::Synapse)?];
        }
        cold.push((kind, times));
    }

    let mut cached = [0.0; 2];
    for (i, server) in Server::ALL.into_iter().enumerate() {
        cached[i] = stack.wrk(server, &last_jpeg[i])?;
        log(&format!(
            "{}: {:.0} req/s for the cached 96×96 crop",
            server.name(),
            cached[i]
        ));
    }
    let early = ["made", "made_after_end", "fell_back", "busy"].map(|outcome| {
        stack
            .repo
            .metric_value(&format!(
                "media_repo_thumbnail_early_uploads_total{{outcome=\"{outcome}\"}}"
            ))
            .unwrap_or(0.0)
    });
    let load_after = load_average();
    drop(stack);

    println!(
        "federation-bench --thumbnails, {started_at}; media-repo {} (cache.backend memory, SQLite); \
         median of {rounds} fresh uploads per cell (min–max in brackets); \
         load average before {load_before}, after {load_after}\n",
        integration::media_repo_bin().display(),
    );
    println!(
        "media-repo's image uploads (warm-up included) by how their thumbnails were made: \
         decoded as they arrived {}, from their bytes in memory once all were in {}, \
         from the datastore because the early decode gave up {}, from the datastore \
         because no worker was free {}\n",
        early[0], early[1], early[2], early[3]
    );
    print!("{}", table(&cold, cached, rss));
    Ok(())
}

impl Stack {
    fn start() -> anyhow::Result<Stack> {
        let ca = TestCa::new().context("creating the test CA")?;
        if let Some(dir) = ca.cert_path().parent() {
            remove_on_signal(dir.to_owned());
        }
        let synapse = FederatingSynapse::builder(&ca)
            .enable_media_repo(true)
            .max_upload_size(SYNAPSE_MAX_UPLOAD_BYTES)
            .start()
            .context("starting Synapse (media repo on)")?;
        let repo = MediaRepo::start(&repo_yaml(
            &synapse.server_name,
            &synapse.client_url(),
            &synapse.signing_key_path().display().to_string(),
            &trusting(&ca),
            "cache:\n  backend: memory\n",
        ))
        .context("starting media-repo")?;
        kill_on_signal(repo.pid());
        remove_on_signal(repo.dir().to_owned());
        let token = synapse.user_token("thumbs").context("user on Synapse")?;
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Stack {
            repo,
            synapse,
            _ca: ca,
            token,
            http,
        })
    }

    fn base(&self, server: Server) -> String {
        match server {
            Server::Repo => self.repo.base_url(),
            Server::Synapse => self.synapse.client_url(),
        }
    }

    fn thumbnail_url(&self, server: Server, media_id: &str, (w, h, method): Size) -> String {
        format!(
            "{}/_matrix/client/v1/media/thumbnail/{}/{media_id}?width={w}&height={h}&method={method}",
            self.base(server),
            self.synapse.server_name
        )
    }

    /// Uploads `bytes` to `server` and gets the 96×96 crop and the 800×600 scale thumbnail;
    /// the media id and the times from sending the upload. The thumbnails are decoded and
    /// their dimensions checked after the clock stops.
    fn cold(&self, server: Server, kind: Kind, bytes: Vec<u8>) -> anyhow::Result<(String, Cold)> {
        let url = format!(
            "{}/_matrix/media/v3/upload?filename={}",
            self.base(server),
            kind.file_name()
        );
        let started = Instant::now();
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", kind.content_type())
            .body(bytes)
            .send()
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let body = response.text().context("reading the upload answer")?;
        ensure!(
            status.is_success(),
            "upload to {}: {status}: {body}",
            server.name()
        );
        let upload = started.elapsed();
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("upload answer is not JSON: {body}"))?;
        let uri = json["content_uri"]
            .as_str()
            .with_context(|| format!("no content_uri in the upload answer: {body}"))?;
        let media_id = uri.rsplit('/').next().unwrap_or(uri).to_owned();
        let mut retries = 0;
        let mut thumbs = Vec::new();
        for size in [CROP, SCALE] {
            thumbs.push(
                self.get_until_served(&self.thumbnail_url(server, &media_id, size), &mut retries)?,
            );
        }
        let both = started.elapsed();
        for ((w, h, method), body) in [CROP, SCALE].into_iter().zip(thumbs) {
            let thumb = image::load_from_memory(&body).with_context(|| {
                format!("{}'s {w}x{h} {method} thumbnail is no image", server.name())
            })?;
            let (tw, th) = (thumb.width(), thumb.height());
            // Neither server scales up: the warm-up image (640×480) gets a 640×480 "scale".
            let ok = if method == "crop" {
                tw == w && th == h
            } else {
                tw <= w && th <= h && (tw == w || th == h || (tw, th) == (640, 480))
            };
            ensure!(
                ok,
                "{}'s {w}x{h} {method} thumbnail is {tw}x{th}",
                server.name()
            );
        }
        Ok((
            media_id,
            Cold {
                upload,
                both,
                retries,
            },
        ))
    }

    fn get_until_served(&self, url: &str, retries: &mut usize) -> anyhow::Result<Vec<u8>> {
        let started = Instant::now();
        loop {
            let response = self
                .http
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response
                    .bytes()
                    .with_context(|| format!("reading GET {url}"))?
                    .to_vec());
            }
            let retry =
                status.as_u16() == 404 || status.as_u16() == 429 || status.is_server_error();
            let body = response.text().unwrap_or_default();
            if !retry || started.elapsed() > RETRY_FOR {
                bail!("GET {url}: {status}: {body}");
            }
            *retries += 1;
            std::thread::sleep(RETRY_EVERY);
        }
    }

    /// Until media-repo's thumbnail pool is idle and its queue empty (the background
    /// generations of the sizes not asked for).
    fn wait_for_background(&self) -> anyhow::Result<()> {
        self.repo
            .wait_for("the thumbnail pool to go idle", BACKGROUND_TIMEOUT, || {
                self.repo
                    .metric_value("media_repo_thumbnail_pool_in_flight")
                    == Some(0.0)
                    && self.repo.metric_value("media_repo_thumbnail_queue") == Some(0.0)
            })
    }

    fn rss(&self, server: Server) -> anyhow::Result<Rss> {
        Rss::of(match server {
            Server::Repo => self.repo.pid(),
            Server::Synapse => self.synapse.pid(),
        })
    }

    /// wrk on the stored 96×96 crop of `media_id`; requests per second. Fails if any
    /// answer was not 2xx or 3xx.
    fn wrk(&self, server: Server, media_id: &str) -> anyhow::Result<f64> {
        let url = self.thumbnail_url(server, media_id, CROP);
        self.get_until_served(&url, &mut 0)?;
        let output = Command::new("wrk")
            .args(WRK_ARGS)
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(&url)
            .output()
            .context("running wrk (apt-get install -y wrk)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(
            !text.contains("Non-2xx"),
            "wrk against {} got errors:\n{text}",
            server.name()
        );
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
    }
}

/// A `width`×`height` image with detail: colour gradients, a ring pattern and per-pixel
/// noise from `seed`. The noise is strong for the JPEG the goal is measured on (about
/// twice the bytes of a 12 MP phone photo at the same quality), moderate for the typical
/// one, and light for the PNG (whose lossless size would otherwise pass media-repo's
/// `thumbnails.max_source_bytes`, 20 MiB).
fn image(kind: Kind, width: u32, height: u32, seed: u64) -> RgbImage {
    let noise_amplitude = match kind {
        Kind::Jpeg => 50.0,
        Kind::TypicalJpeg => 20.0,
        Kind::Png => 4.0,
    };
    let mut noise = vec![0u8; (width * height * 3) as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut noise);
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let i = ((y * width + x) * 3) as usize;
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let (dx, dy) = (fx - 0.5, fy - 0.5);
        let ring = ((dx * dx + dy * dy).sqrt() * 60.0 + seed as f32).sin() * 40.0;
        let base = [
            fx * 200.0 + ring,
            fy * 200.0 - ring,
            (fx + fy) * 100.0 + ring * 0.5,
        ];
        for c in 0..3 {
            px[c] = (base[c] + 28.0 + noise[i + c] as f32 * noise_amplitude / 255.0)
                .clamp(0.0, 255.0) as u8;
        }
    }
    img
}

fn encode(kind: Kind, img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match kind {
        Kind::Jpeg | Kind::TypicalJpeg => JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(img)
            .context("encoding the JPEG")?,
        Kind::Png => PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .context("encoding the PNG")?,
    }
    Ok(out.into_inner())
}

fn table(cold: &[(Kind, [Vec<Cold>; 2])], cached: [f64; 2], rss: [[Rss; 2]; 2]) -> String {
    let secs = |v: &[Cold], f: fn(&Cold) -> Duration| -> Vec<f64> {
        v.iter().map(|c| f(c).as_secs_f64()).collect()
    };
    let mut out = String::from(
        "| image | server | upload answered, s | 96×96 crop + 800×600 scale served, s | retries |\n\
         |---|---|---:|---:|---:|\n",
    );
    for (kind, times) in cold {
        for (i, server) in Server::ALL.into_iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                kind.label(),
                server.name(),
                spread(&secs(&times[i], |c| c.upload)),
                spread(&secs(&times[i], |c| c.both)),
                times[i].iter().map(|c| c.retries).sum::<usize>(),
            ));
        }
    }
    out.push_str(
        "\n| image | Synapse / media-repo, upload + both thumbnails (goal ≥ 5) |\n|---|---:|\n",
    );
    for (kind, times) in cold {
        out.push_str(&format!(
            "| {} | **{:.1}** |\n",
            kind.label(),
            median(&secs(&times[1], |c| c.both)) / median(&secs(&times[0], |c| c.both)),
        ));
    }
    out.push_str(&format!(
        "\n| cached 96×96 crop, wrk {} | media-repo | Synapse | media-repo / Synapse (goal ≥ 10) |\n\
         |---|---:|---:|---:|\n| req/s | {:.0} | {:.0} | **{:.1}** |\n",
        WRK_ARGS.join(" "),
        cached[0],
        cached[1],
        cached[0] / cached[1],
    ));
    out.push_str(
        "\n| peak RSS (VmHWM), MiB | before the JPEG rounds | after them | growth |\n|---|---:|---:|---:|\n",
    );
    for (i, server) in Server::ALL.into_iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} |\n",
            server.name(),
            mib(rss[0][i].peak_kib),
            mib(rss[1][i].peak_kib),
            mib(rss[1][i].peak_kib) - mib(rss[0][i].peak_kib),
        ));
    }
    out
}
