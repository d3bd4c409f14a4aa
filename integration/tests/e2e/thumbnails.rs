//! Thumbnails through the real binary: which size a request gets, formats, hostile input,
//! one generation for many concurrent requests, and the same bytes from every server.

use std::io::Cursor;
use std::time::Duration;

use image::{ImageFormat, RgbaImage};

use crate::common::{matrix_error, users, Options, Stack};

/// A `width`×`height` image with a gradient (and, for PNG, a transparent corner).
pub(crate) fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let mut img = RgbaImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let alpha = if x < width / 4 && y < height / 4 {
            0
        } else {
            255
        };
        *px = image::Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, 90, alpha]);
    }
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img)
            .to_rgb8()
            .write_to(&mut out, format)
            .unwrap(),
        _ => img.write_to(&mut out, format).unwrap(),
    }
    out.into_inner()
}

fn thumbnail(s: &Stack, server: &str, id: &str, query: &str) -> reqwest::blocking::Response {
    s.get(
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}"),
        Some(&users().alice),
    )
}

/// Dimensions and content type of a thumbnail answer.
fn decoded(response: reqwest::blocking::Response) -> (u32, u32, String, Vec<u8>) {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = response.bytes().unwrap().to_vec();
    let img = image::load_from_memory(&bytes).unwrap();
    (img.width(), img.height(), content_type, bytes)
}

fn generations(s: &Stack) -> f64 {
    s.repo
        .metric_value("media_repo_thumbnail_generations_total")
        .unwrap_or(0.0)
}

/// Thumbnail bytes answered from memory while they were being stored.
fn fresh_bytes(s: &Stack) -> f64 {
    s.repo
        .metric_value("media_repo_download_bytes_total{source=\"fresh\"}")
        .unwrap_or(0.0)
}

/// Waits until background pre-generation is done (the counter stops moving).
fn settle(s: &Stack) {
    let mut last = -1.0;
    for _ in 0..50 {
        let now = generations(s);
        if now == last {
            return;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn thumbnail_sizes_formats_and_errors() {
    let s = Stack::start(Options::default());
    let alice = &users().alice;
    let (server, wide) = s.upload(
        alice,
        picture(1000, 500, ImageFormat::Png),
        "image/png",
        None,
    );
    let (_, tiny) = s.upload(alice, picture(20, 20, ImageFormat::Png), "image/png", None);
    let (_, tall) = s.upload(
        alice,
        picture(80, 200, ImageFormat::Jpeg),
        "image/jpeg",
        None,
    );
    settle(&s);

    // Which size: the spec's examples and the configured sizes.
    let cases = [
        (&wide, "width=800&height=600&method=crop", (667, 500)),
        (&wide, "width=96&height=96&method=crop", (96, 96)),
        (&wide, "width=32&height=32&method=crop", (32, 32)),
        (&wide, "width=320&height=240&method=scale", (320, 160)),
        (&wide, "width=640&height=480", (640, 320)),
        (&wide, "width=100&height=100&method=scale", (320, 160)),
        (&tiny, "width=96&height=96&method=crop", (20, 20)),
        (&tiny, "width=800&height=600&method=scale", (20, 20)),
        (&tall, "width=96&height=96&method=crop", (80, 80)),
    ];
    for (id, query, (w, h)) in cases {
        let (width, height, _, _) = decoded(thumbnail(&s, &server, id, query));
        assert!(
            width.abs_diff(w) <= 1 && height.abs_diff(h) <= 1,
            "{query}: got {width}x{height}, expected {w}x{h}"
        );
    }
    // Formats: JPEG stays JPEG; PNG keeps its alpha.
    let (_, _, jpeg_type, _) = decoded(thumbnail(
        &s,
        &server,
        &tall,
        "width=32&height=32&method=crop",
    ));
    assert_eq!(jpeg_type, "image/jpeg");
    // (a scaled thumbnail keeps the source's transparent top-left corner)
    let (_, _, png_type, png) = decoded(thumbnail(
        &s,
        &server,
        &wide,
        "width=320&height=240&method=scale",
    ));
    assert_eq!(png_type, "image/png");
    let alpha = image::load_from_memory(&png).unwrap().to_rgba8();
    assert_eq!(
        alpha.get_pixel(0, 0)[3],
        0,
        "the transparent corner stays transparent"
    );
    // HEAD answers like GET.
    let head = s
        .http
        .head(s.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{wide}?width=320&height=240&method=scale"
        )))
        .bearer_auth(alice)
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        png.len().to_string()
    );

    // Bad requests and hostile input.
    assert_eq!(
        matrix_error(thumbnail(&s, &server, &wide, "height=96")),
        (400, "M_MISSING_PARAM".into())
    );
    assert_eq!(
        matrix_error(thumbnail(&s, &server, &wide, "width=0&height=96")),
        (400, "M_INVALID_PARAM".into())
    );
    assert_eq!(
        matrix_error(thumbnail(
            &s,
            &server,
            &wide,
            "width=9&height=9&method=zoom"
        )),
        (400, "M_INVALID_PARAM".into())
    );
    let (_, text) = s.upload(alice, b"just words".to_vec(), "text/plain", None);
    assert_eq!(
        matrix_error(thumbnail(&s, &server, &text, "width=96&height=96")),
        (400, "M_UNKNOWN".into())
    );
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#.to_vec();
    let (_, svg) = s.upload(alice, svg, "image/svg+xml", None);
    assert_eq!(
        matrix_error(thumbnail(&s, &server, &svg, "width=96&height=96")),
        (400, "M_UNKNOWN".into())
    );
    // A PNG whose header claims 50000x50000 pixels: refused before decoding.
    let mut bomb = picture(8, 8, ImageFormat::Png);
    bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let (_, bomb) = s.upload(alice, bomb, "image/png", None);
    assert_eq!(
        matrix_error(thumbnail(&s, &server, &bomb, "width=96&height=96")),
        (413, "M_TOO_LARGE".into())
    );
    let missing = thumbnail(&s, &server, "NoSuchMedia123", "width=96&height=96");
    assert_eq!(matrix_error(missing), (404, "M_NOT_FOUND".into()));
    // Legacy paths are frozen like downloads.
    let legacy = s.get(
        &format!("/_matrix/media/v3/thumbnail/{server}/{wide}?width=96&height=96"),
        None,
    );
    assert_eq!(legacy.status(), 404);
}

#[test]
fn one_generation_for_many_requests_and_the_same_bytes_everywhere() {
    let s = Stack::start(Options::default());
    let alice = users().alice.clone();
    let source = picture(1200, 900, ImageFormat::Jpeg);
    let (server, id) = s.upload(&alice, source.clone(), "image/jpeg", None);
    // The five configured sizes are made in the background first.
    s.repo
        .wait_for("pre-generation", Duration::from_secs(60), || {
            generations(&s) >= 5.0
        })
        .unwrap();
    settle(&s);
    // Pre-generation runs on after the upload was answered; its log lines name the media.
    s.repo
        .wait_for(
            "pre-generation to be logged",
            Duration::from_secs(10),
            || s.repo.logs().contains("thumbnails pre-generated"),
        )
        .unwrap();
    let logs = s.repo.logs();
    let done = logs
        .lines()
        .find(|line| line.contains("thumbnails pre-generated"))
        .expect("pre-generation is logged");
    assert!(
        done.contains(&format!(
            "pregenerate_thumbnails{{mxc=mxc://{server}/{id}}}"
        )),
        "{done}"
    );
    let before = generations(&s);
    // A size no configured one covers: made on demand, once. The requests that join the
    // generation are answered from its bytes while it is stored, the one that made it
    // once stored, later ones from storage: the same bytes and headers every way, and
    // ranges cut from whichever source (every third request asks for one).
    let fresh_before = fresh_bytes(&s);
    let query = "width=1000&height=700&method=scale";
    let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}");
    const RANGE_END: usize = 99;
    let get = |ranged: bool| {
        let mut request = s.http.get(s.url(&path)).bearer_auth(&alice);
        if ranged {
            request = request.header("Range", format!("bytes=0-{RANGE_END}"));
        }
        let response = request.send().unwrap();
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        let (etag, disposition) = (header("etag"), header("content-disposition"));
        let status = response.status().as_u16();
        (
            status,
            etag,
            disposition,
            response.bytes().unwrap().to_vec(),
        )
    };
    let answers: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| scope.spawn(move || get(i % 3 == 0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (status, etag, disposition, whole) = get(false);
    assert_eq!(status, 200);
    for (i, (status, their_etag, their_disposition, body)) in answers.iter().enumerate() {
        assert_eq!((their_etag, their_disposition), (&etag, &disposition));
        if i % 3 == 0 {
            assert_eq!(*status, 206);
            assert!(body[..] == whole[..=RANGE_END], "the range's bytes");
        } else {
            assert_eq!(*status, 200);
            assert!(*body == whole, "identical bytes for all");
        }
    }
    assert_eq!(
        generations(&s) - before,
        1.0,
        "one generation for 50 requests"
    );
    assert!(
        fresh_bytes(&s) > fresh_before,
        "requests that joined were answered from the fresh bytes"
    );
    let bodies = [whole];

    // Another server, same input: the same bytes.
    let other = Stack::start(Options::default());
    let (other_server, other_id) = other.upload(&alice, source, "image/jpeg", None);
    let again = decoded(thumbnail(&other, &other_server, &other_id, query)).3;
    assert!(again == bodies[0], "byte-identical across servers");
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// 64 thumbnail requests for distinct large images at once: the pool never runs more jobs
/// than it has workers, the rest queue or are refused with 429, and downloads go on.
#[test]
fn a_flood_of_thumbnails_stays_within_the_pool() {
    let s = Stack::start(Options::default());
    let alice = users().alice.clone();
    let ids: Vec<(String, String)> = (0..64)
        .map(|i| {
            let img = picture(1600 + i, 1200, ImageFormat::Jpeg);
            s.upload(&alice, img, "image/jpeg", None)
        })
        .collect();
    let (server, plain) = s.upload(&alice, vec![7u8; 300_000], "application/octet-stream", None);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (s, done) = (&s, &done);
    /// Stops the watcher however the scope ends: a failed request must fail the test, not
    /// leave the scope waiting forever for a watcher that was never told to stop.
    struct StopWatcher<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopWatcher<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let (statuses, peak) = std::thread::scope(|scope| {
        let stop_watcher = StopWatcher(done);
        let watcher = scope.spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(now) = s.repo.metric_value("media_repo_thumbnail_pool_in_flight") {
                    peak = peak.max(now);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        let requests: Vec<_> = ids
            .iter()
            .map(|(server, id)| {
                scope.spawn(move || {
                    let response = thumbnail(s, server, id, "width=1000&height=700&method=scale");
                    let status = response.status().as_u16();
                    if status == 429 {
                        assert!(response.headers().get("retry-after").is_some());
                    }
                    status
                })
            })
            .collect();
        // Downloads are not stuck behind the thumbnails.
        let quick = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        for _ in 0..5 {
            let response = quick
                .get(s.url(&format!(
                    "/_matrix/client/v1/media/download/{server}/{plain}"
                )))
                .bearer_auth(&alice)
                .send()
                .expect("a download completes within 5 s during the flood");
            assert_eq!(response.status(), 200);
        }
        let statuses: Vec<u16> = requests.into_iter().map(|h| h.join().unwrap()).collect();
        drop(stop_watcher);
        (statuses, watcher.join().unwrap())
    });
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.iter().filter(|s| **s == 200).count() > 0);
    assert!(
        peak <= workers,
        "pool in flight peaked at {peak} with {workers} workers"
    );
    assert!(peak >= 1.0, "the watcher saw the pool busy");
}

/// Sizes above the configured ones are made at the asked size for up to 8 sizes per media
/// and method (`MAX_EXTRA_SIZES_PER_MEDIA`); a ninth gets one thumbnail at the largest size
/// (1600 square), which then serves every further size: never smaller than asked, and a
/// client cannot make one media store a thumbnail per size it names.
#[test]
fn sizes_above_the_configured_ones_are_bounded_per_media() {
    let s = Stack::start(Options::default());
    let alice = &users().alice;
    let (server, id) = s.upload(
        alice,
        picture(2000, 1500, ImageFormat::Png),
        "image/png",
        None,
    );
    // The five configured sizes are made in the background first.
    integration::wait_until("the configured sizes", Duration::from_secs(30), || {
        generations(&s) >= 5.0
    })
    .unwrap();
    settle(&s);
    let before = generations(&s);
    assert_eq!(before, 5.0, "the configured sizes, pre-generated");
    for i in 0..12u32 {
        let width = 900 + 10 * i;
        let query = format!("width={width}&height=700&method=scale");
        let got = decoded(thumbnail(&s, &server, &id, &query));
        // 2000×1500 fitted inside width×700 (the tighter side decides).
        let fitted = if width * 1500 <= 700 * 2000 {
            (width, width * 1500 / 2000)
        } else {
            (700 * 2000 / 1500, 700)
        };
        let expected = if i < 8 { fitted } else { (1600, 1200) };
        assert!(
            got.0.abs_diff(expected.0) <= 1 && got.1.abs_diff(expected.1) <= 1,
            "{query}: got {}x{}, expected {}x{}",
            got.0,
            got.1,
            expected.0,
            expected.1
        );
        assert!(
            got.0 + 1 >= fitted.0 && got.1 + 1 >= fitted.1,
            "{query}: smaller than asked"
        );
    }
    // Eight sizes of their own, then one at the largest size for the other four.
    assert_eq!(generations(&s) - before, 9.0);
}

fn early_uploads(s: &Stack, outcome: &str) -> f64 {
    s.repo
        .metric_value(&format!(
            "media_repo_thumbnail_early_uploads_total{{outcome=\"{outcome}\"}}"
        ))
        .unwrap_or(0.0)
}

/// An upload body read from memory in two halves, with a pause (or a failure) between.
struct TwoHalves {
    bytes: Vec<u8>,
    at: usize,
    pause: Duration,
    fail_in_between: bool,
}

impl std::io::Read for TwoHalves {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let half = self.bytes.len() / 2;
        if self.at == half {
            if self.fail_in_between {
                return Err(std::io::Error::other("client gives up"));
            }
            std::thread::sleep(std::mem::take(&mut self.pause));
        }
        let end = if self.at < half {
            half
        } else {
            self.bytes.len()
        };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn upload_in_two_halves(
    s: &Stack,
    bytes: Vec<u8>,
    content_type: &str,
    pause: Duration,
    fail: bool,
) -> reqwest::Result<reqwest::blocking::Response> {
    s.http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(&users().alice)
        .header("Content-Type", content_type)
        .body(reqwest::blocking::Body::new(TwoHalves {
            bytes,
            at: 0,
            pause,
            fail_in_between: fail,
        }))
        .send()
}

/// Uploads `source` twice: once decoded as it arrives (counted `made`, which only a decode
/// that read the arriving bytes is: one after the body's end is `made_after_end`), once
/// with a stall longer than the decode waits for (it gives its worker back and the
/// thumbnails are made from the datastore after the upload); every configured size must be
/// the same either way.
fn same_thumbnails_as_it_arrives_and_after(s: &Stack, source: Vec<u8>, content_type: &str) {
    let alice = users().alice.clone();
    let (made, fell_back, generated) = (
        early_uploads(s, "made"),
        early_uploads(s, "fell_back"),
        generations(s),
    );
    let (server, early_id) = s.upload(&alice, source.clone(), content_type, None);
    s.repo
        .wait_for(
            "thumbnails made as the upload arrived",
            Duration::from_secs(60),
            || early_uploads(s, "made") > made && generations(s) >= generated + 5.0,
        )
        .unwrap();

    let response =
        upload_in_two_halves(s, source, content_type, Duration::from_millis(1500), false).unwrap();
    let late_id = crate::common::media_id(response);
    s.repo
        .wait_for(
            "thumbnails made after the upload",
            Duration::from_secs(60),
            || early_uploads(s, "fell_back") > fell_back && generations(s) >= generated + 10.0,
        )
        .unwrap();
    settle(s);
    assert_eq!(
        generations(s),
        generated + 10.0,
        "each size made once per upload"
    );
    assert_eq!(early_uploads(s, "made"), made + 1.0);
    assert_eq!(early_uploads(s, "fell_back"), fell_back + 1.0);

    for query in [
        "width=32&height=32&method=crop",
        "width=96&height=96&method=crop",
        "width=320&height=240&method=scale",
        "width=640&height=480&method=scale",
        "width=800&height=600&method=scale",
    ] {
        let early = decoded(thumbnail(s, &server, &early_id, query));
        let late = decoded(thumbnail(s, &server, &late_id, query));
        assert!(
            early == late,
            "{content_type} {query}: the same thumbnail either way"
        );
    }
    assert_eq!(
        generations(s),
        generated + 10.0,
        "all served from the stored sizes"
    );
}

#[test]
fn thumbnails_made_as_the_upload_arrives_are_those_made_after_it() {
    let s = Stack::start(Options::default());
    // 1200×900: its five configured sizes need three JPEG decodes (1/4, 1/2, full), the
    // first from the arriving body, the others from all of its bytes.
    let source = picture(1200, 900, ImageFormat::Jpeg);
    same_thumbnails_as_it_arrives_and_after(&s, source.clone(), "image/jpeg");
    // A PNG with alpha: its one decode reads the arriving body.
    let png = picture(900, 700, ImageFormat::Png);
    same_thumbnails_as_it_arrives_and_after(&s, png, "image/png");

    // A client that gives up halfway: nothing stored, and the worker is free again.
    let counted = |s: &Stack| {
        ["made", "made_after_end", "fell_back"]
            .iter()
            .map(|outcome| early_uploads(s, outcome))
            .sum::<f64>()
    };
    let before = counted(&s);
    assert!(upload_in_two_halves(&s, source, "image/jpeg", Duration::ZERO, true).is_err());
    s.repo
        .wait_for("the pool is idle", Duration::from_secs(10), || {
            s.repo.metric_value("media_repo_thumbnail_pool_in_flight") == Some(0.0)
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(generations(&s), 20.0, "nothing made for a failed upload");
    assert_eq!(
        counted(&s),
        before,
        "a failed upload is counted as no stored one"
    );
}

/// A request that joins a pre-generated thumbnail while it is being stored is answered
/// from its bytes, which do not pass the cache: the thumbnail is copied into the cache once
/// stored, without waiting for another request. (The debug build's
/// `x-media-repo-test-thumbnail-pause-ms` hook holds the store back long enough to join.)
#[test]
fn a_thumbnail_joined_while_it_is_stored_reaches_the_cache() {
    // Long enough that the request below lands inside it on a loaded machine too.
    const PAUSE_MS: u64 = 8_000;
    let s = Stack::start(Options::default());
    let alice = &users().alice;
    let stored_blobs = || {
        s.repo
            .metric_value(
                "media_repo_cache_requests_total{backend=\"memory\",op=\"blob_put\",result=\"stored\"}",
            )
            .unwrap_or(0.0)
    };
    let response = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(alice)
        .header("Content-Type", "image/png")
        .header("x-media-repo-test-thumbnail-pause-ms", PAUSE_MS.to_string())
        .body(picture(640, 480, ImageFormat::Png))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().unwrap();
    let uri = answer["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    // The upload warms the cache with itself.
    s.repo
        .wait_for(
            "the upload to warm the cache",
            Duration::from_secs(10),
            || stored_blobs() >= 1.0,
        )
        .unwrap();
    // Made at once, then held before its store: this request joins it.
    std::thread::sleep(Duration::from_millis(500));
    let before = stored_blobs();
    let joined = thumbnail(&s, server, id, "width=96&height=96&method=crop");
    assert_eq!(joined.status(), 200);
    assert!(
        fresh_bytes(&s) >= 1.0,
        "answered from the thumbnail's bytes while it was being stored"
    );
    s.repo
        .wait_for(
            "the joined thumbnail to reach the cache",
            Duration::from_millis(PAUSE_MS) + Duration::from_secs(10),
            || stored_blobs() > before,
        )
        .unwrap();
}
