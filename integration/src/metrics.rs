//! Reading samples out of Prometheus text exposition (`GET /metrics`).
//!
//! A query is written like a sample line without its value: `name` or
//! `name{label="value",...}`. Label order does not matter, escapes (`\"`, `\\`, `\n`)
//! are understood.
//!
//! Hand-written on purpose; the crates.io parsers were weighed (issue 12) and none fits:
//! * `prometheus` (already a dependency) only encodes; it has no parser.
//! * `prometheus-parse` (and `prometheus-scrape`, which it copies) splits label sets on `,`
//!   and `=` and does not unescape, so `shard="a, \"b\""` comes out wrong; it folds a
//!   histogram's `_bucket` lines into one value, so a series query like
//!   `x_bucket{le="+Inf"}` no longer finds its sample; its last release is of 2023.
//! * `openmetrics-parser` parses correctly, but is LGPL-3.0 in this Apache-2.0 workspace,
//!   says its API changes to suit its author, pulls in pest, and also returns families with
//!   histograms folded: what the tests ask ("this series' value", "the sum over series
//!   matching these labels") would need the lines flattened back, and a query (a series
//!   without a value) still needs parsing here.
//!
//! What is left is a line reader (samples are one per line by the format's definition) and
//! a label-set reader with the format's three escapes, pinned by the tests below.

use std::collections::BTreeMap;

/// One parsed sample (or query): metric name, labels, and the value (`None` in a query).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The value of the sample whose name and full label set equal `query`'s.
pub fn find_value(text: &str, query: &str) -> Option<f64> {
    let (name, labels) = parse_series(query)?;
    samples(text)
        .find(|s| s.name == name && s.labels == labels)
        .map(|s| s.value)
}

/// The sum over samples named like `query` whose labels include all of `query`'s
/// (e.g. `requests_total{shard="a"}` adds every op and result of shard a). `None` if no
/// sample matches.
pub fn sum_values(text: &str, query: &str) -> Option<f64> {
    let (name, labels) = parse_series(query)?;
    let mut found = None;
    for s in samples(text) {
        if s.name == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += s.value;
        }
    }
    found
}

/// Every sample in `text`; comment lines and lines that do not parse are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = Sample> + '_ {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(parse_sample)
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, labels, rest) = parse_prefix(line)?;
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses a query: a series with nothing after it.
fn parse_series(query: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (name, labels, rest) = parse_prefix(query.trim())?;
    rest.trim().is_empty().then_some((name, labels))
}

/// `name{labels}` at the start of `s`, and what follows it.
fn parse_prefix(s: &str) -> Option<(String, BTreeMap<String, String>, &str)> {
    let name_end = s
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Skip separators, then either the closing brace or `key="value"`.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let mut key = String::from(c);
            loop {
                let (_, c) = chars.next()?;
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(key.trim().to_owned(), value);
        }
    }
    Some((name.to_owned(), labels, rest))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP media_repo_cache_shard_requests_total Requests.
# TYPE media_repo_cache_shard_requests_total counter
media_repo_cache_shard_requests_total{op="get",result="hit",shard="a"} 7
media_repo_cache_shard_requests_total{op="get",result="miss",shard="a"} 3
media_repo_cache_shard_requests_total{op="set",result="ok",shard="b"} 2
media_repo_cache_shard_up{shard="a, \"quoted\""} 1
process_open_fds 12
latency_bucket{le="+Inf"} 5
weird_value 1.5e3 1700000000000
"#;

    #[test]
    fn finds_exact_series_regardless_of_label_order() {
        let q = r#"media_repo_cache_shard_requests_total{shard="a",result="miss",op="get"}"#;
        assert_eq!(find_value(TEXT, q), Some(3.0));
        assert_eq!(find_value(TEXT, "process_open_fds"), Some(12.0));
        assert_eq!(find_value(TEXT, r#"latency_bucket{le="+Inf"}"#), Some(5.0));
        assert_eq!(find_value(TEXT, "weird_value"), Some(1500.0));
        assert_eq!(
            find_value(TEXT, r#"media_repo_cache_shard_up{shard="a, \"quoted\""}"#),
            Some(1.0)
        );
    }

    #[test]
    fn partial_labels_do_not_match_exactly_but_sum() {
        let q = r#"media_repo_cache_shard_requests_total{shard="a"}"#;
        assert_eq!(find_value(TEXT, q), None);
        assert_eq!(sum_values(TEXT, q), Some(10.0));
        assert_eq!(
            sum_values(TEXT, "media_repo_cache_shard_requests_total"),
            Some(12.0)
        );
        assert_eq!(sum_values(TEXT, "absent_total"), None);
    }

    #[test]
    fn bad_queries_are_none() {
        assert_eq!(find_value(TEXT, ""), None);
        assert_eq!(find_value(TEXT, r#"x{a="1""#), None);
        assert_eq!(find_value(TEXT, "process_open_fds 12"), None);
    }
}
