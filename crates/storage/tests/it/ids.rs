//! The identifier allow-lists, against the inputs an attacker would try.

use std::collections::HashSet;

use mr_storage::{is_valid_media_id, is_valid_server_name, random_media_id};

#[test]
fn random_media_ids_are_long_alphanumeric_and_distinct() {
    let ids: HashSet<String> = (0..10_000).map(|_| random_media_id()).collect();
    assert_eq!(ids.len(), 10_000);
    for id in &ids {
        assert!(id.len() >= 24, "{id} too short");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert!(is_valid_media_id(id));
    }
}

#[test]
fn media_ids() {
    for good in [
        "a",
        "Z",
        "0",
        "abcDEF123",
        "with_underscore",
        "with-dash",
        "-_-",
        &"x".repeat(255),
    ] {
        assert!(is_valid_media_id(good), "{good:?} rejected");
    }
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        "a/b",
        "/",
        "%2e%2e",
        "%2f",
        "a%2Fb",
        "a\0b",
        "\0",
        "a b",
        "a.b",
        "a\\b",
        "a\nb",
        "é",
        "media😀",
        "ＡＢＣ",
        &"x".repeat(256),
        &"x".repeat(100_000),
    ] {
        assert!(!is_valid_media_id(bad), "{bad:?} accepted");
    }
}

#[test]
fn server_names() {
    for good in [
        "example.org",
        "localhost",
        "localhost:8008",
        "matrix.example.org:8448",
        "my-server.example",
        "1.2.3.4",
        "1.2.3.4:8448",
        "[::1]",
        "[::1]:8448",
        "[2001:db8::1]:443",
        "[::ffff:1.2.3.4]",
        "a:1",
        "a:65535",
        &format!("{}.org", "a".repeat(63)),
        &vec!["abc"; 63].join("."), // 251 characters
    ] {
        assert!(is_valid_server_name(good), "{good:?} rejected");
    }
    for bad in [
        "",
        ".",
        "..",
        "../etc",
        "example.org/..",
        "a/b",
        "example.org/",
        "%2e%2e",
        "%2f",
        "example%2eorg",
        "exa\0mple.org",
        "example.org\0",
        "exa mple.org",
        "example.org\n",
        "ex..ample.org",
        ".example.org",
        "example.org.",
        "example.org:",
        "example.org:0",
        "example.org:65536",
        "example.org:123456",
        "example.org:80:80",
        "example.org:8a",
        "example.org:+80",
        "::1",
        "[::1",
        "::1]",
        "[::1]x",
        "[::1]:",
        "[::1]:99999",
        "[not:an:ip]",
        "[example.org]",
        "[]",
        "user@example.org",
        "exämple.org",
        "例え.jp",
        "xn--r8jz45g.jp:443x",
        "😀.org",
        &format!("{}.org", "a".repeat(64)),
        &"a".repeat(300),
        &vec!["abc"; 70].join("."),
    ] {
        assert!(!is_valid_server_name(bad), "{bad:?} accepted");
    }
    // Punycode is how a non-ASCII name is written, and is fine.
    assert!(is_valid_server_name("xn--r8jz45g.jp:443"));
}
