//! The file datastore on real directories: content addressing, dedup, limits, aborts.

use std::path::PathBuf;

use bytes::Bytes;
use mr_storage::{Error, FileDatastore, StoredObject, WRITE_BATCH_BYTES};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::common::{files_under, temp_files, wait_for_no_temp_files};

fn store() -> (tempfile::TempDir, FileDatastore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::new("default", dir.path().join("media")).unwrap();
    (dir, store)
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn object_files(store: &FileDatastore) -> Vec<PathBuf> {
    let tmp = store.root().join("tmp");
    files_under(store.root())
        .into_iter()
        .filter(|p| !p.starts_with(&tmp))
        .collect()
}

async fn put(store: &FileDatastore, data: &[u8], chunk: usize) -> StoredObject {
    let mut writer = store.writer(u64::MAX).unwrap();
    for piece in data.chunks(chunk) {
        writer.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    writer.finish().await.unwrap().commit().await.unwrap()
}

async fn read_all(store: &FileDatastore, location: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open(location)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn round_trip_is_content_addressed() {
    let (_dir, store) = store();
    assert_eq!(store.id(), "default");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let object = put(&store, &data, 7_777).await;

    let sha = sha_hex(&data);
    assert_eq!(object.sha256, sha);
    assert_eq!(object.size, data.len() as u64);
    assert_eq!(
        object.location,
        format!("{}/{}/{}", &sha[..2], &sha[2..4], sha)
    );
    assert_eq!(read_all(&store, &object.location).await, data);
    assert_eq!(
        store.path_of(&object.location).unwrap(),
        store.root().join(&object.location)
    );
    assert!(temp_files(&store).is_empty());
}

#[tokio::test]
async fn empty_object() {
    let (_dir, store) = store();
    let object = store
        .writer(0)
        .unwrap()
        .finish()
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(object.sha256, sha_hex(b""));
    assert_eq!(object.size, 0);
    assert!(read_all(&store, &object.location).await.is_empty());
}

#[tokio::test]
async fn identical_bytes_are_stored_once() {
    let (_dir, store) = store();
    let a = put(&store, b"same bytes, twice", 4).await;
    let b = put(&store, b"same bytes, twice", 100).await;
    assert_eq!(a, b);
    let c = put(&store, b"different bytes", 100).await;
    assert_ne!(a.location, c.location);
    assert_eq!(object_files(&store).len(), 2);
    assert!(temp_files(&store).is_empty());

    // Concurrent writers of the same bytes also end with one file.
    let data = vec![42u8; 300_000];
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (store, data) = (store.clone(), data.clone());
            tokio::spawn(async move { put(&store, &data, 10_000).await })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap().sha256, sha_hex(&data));
    }
    assert_eq!(object_files(&store).len(), 3);
    assert!(temp_files(&store).is_empty());
}

#[tokio::test]
async fn too_large_leaves_nothing() {
    let (_dir, store) = store();
    let mut writer = store.writer(10).unwrap();
    writer.write(Bytes::from_static(b"123456")).await.unwrap();
    match writer.write(Bytes::from_static(b"789012")).await {
        Err(Error::TooLarge { max_bytes: 10 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Gone by the time the error is returned, not eventually.
    assert!(temp_files(&store).is_empty());
    assert!(object_files(&store).is_empty());
    assert!(matches!(
        writer.write(Bytes::from_static(b"x")).await,
        Err(Error::WriterClosed)
    ));
    assert!(matches!(writer.finish().await, Err(Error::WriterClosed)));

    // Exactly the limit is fine.
    let mut writer = store.writer(10).unwrap();
    writer.write(Bytes::from_static(b"12345")).await.unwrap();
    writer.write(Bytes::from_static(b"67890")).await.unwrap();
    assert_eq!(writer.finish().await.unwrap().object().size, 10);
    assert!(temp_files(&store).is_empty() || wait_ok(&store).await);

    // Past the limit after a batch went to disk: the temp file is gone too.
    let mut writer = store.writer(WRITE_BATCH_BYTES as u64 + 10).unwrap();
    writer
        .write(Bytes::from(vec![7u8; WRITE_BATCH_BYTES]))
        .await
        .unwrap();
    assert_eq!(
        temp_files(&store).len(),
        1,
        "a full batch goes to a temp file"
    );
    assert!(matches!(
        writer.write(Bytes::from(vec![7u8; 11])).await,
        Err(Error::TooLarge { .. })
    ));
    assert!(temp_files(&store).is_empty());
}

/// A dropped staged object removes its temp file off-thread; true once it is gone.
async fn wait_ok(store: &FileDatastore) -> bool {
    wait_for_no_temp_files(store).await;
    true
}

#[tokio::test]
async fn dropped_writer_leaves_nothing() {
    let (_dir, store) = store();
    let mut writer = store.writer(u64::MAX).unwrap();
    for _ in 0..50 {
        writer
            .write(Bytes::from(vec![1u8; 64 * 1024]))
            .await
            .unwrap();
    }
    assert_eq!(temp_files(&store).len(), 1);
    drop(writer);
    wait_for_no_temp_files(&store).await;
    assert!(object_files(&store).is_empty());

    // An explicit abort waits for the cleanup.
    let mut writer = store.writer(u64::MAX).unwrap();
    writer.write(Bytes::from_static(b"abc")).await.unwrap();
    writer.abort().await;
    assert!(temp_files(&store).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_64_mib_in_small_chunks() {
    const TOTAL: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 4 * 1024;
    let (_dir, store) = store();
    let mut writer = store.writer(TOTAL as u64).unwrap();
    let mut expected = Sha256::new();
    // xorshift, so the bytes are not all alike and nothing but the chunk is held here.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        expected.update(&chunk);
        writer.write(Bytes::copy_from_slice(&chunk)).await.unwrap();
    }
    let object = writer.finish().await.unwrap().commit().await.unwrap();
    assert_eq!(object.size, TOTAL as u64);
    assert_eq!(object.sha256, hex::encode(expected.finalize()));
    let on_disk = std::fs::metadata(store.path_of(&object.location).unwrap()).unwrap();
    assert_eq!(on_disk.len(), TOTAL as u64);
    assert!(temp_files(&store).is_empty());
}

#[tokio::test]
async fn open_a_missing_object() {
    let (_dir, store) = store();
    let missing = format!("00/00/{}", "0".repeat(64));
    assert!(matches!(store.open(&missing).await, Err(Error::NotFound(l)) if l == missing));
}

#[tokio::test]
async fn locations_are_validated() {
    let (_dir, store) = store();
    let sha = "0123456789abcdef".repeat(4);
    assert!(store.path_of(&format!("01/23/{sha}")).is_ok());
    let bad = [
        String::new(),
        sha.clone(),
        format!("/01/23/{sha}"),
        format!("01/23/{sha}/"),
        format!("01/23/{sha}/x"),
        format!("01/24/{sha}"),
        format!("02/23/{sha}"),
        format!("01/23/{}", sha.to_uppercase()),
        format!("01/23/{}", &sha[..63]),
        format!("01/23/{sha}0"),
        format!("../23/{sha}"),
        format!("01/../{sha}"),
        "../../etc/passwd".to_owned(),
        "01/23/..".to_owned(),
        "01/23/%2e%2e".to_owned(),
        format!("01%2f23/{sha}"),
        format!("01/23/{}\0", &sha[..63]),
        format!("01\\23\\{sha}"),
        format!("01/23/{}é", &sha[..62]),
    ];
    for location in &bad {
        assert!(
            matches!(store.path_of(location), Err(Error::InvalidLocation(_))),
            "{location:?} accepted"
        );
        assert!(matches!(
            store.open(location).await,
            Err(Error::InvalidLocation(_))
        ));
    }
}

#[tokio::test]
async fn temp_files_no_upload_owns_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let store = FileDatastore::new("default", root.clone()).unwrap();
    let tmp = root.join("tmp");

    // A running upload (a full batch on disk, its file locked) ...
    let mut running = store.writer(u64::MAX).unwrap();
    running
        .write(Bytes::from(vec![1u8; WRITE_BATCH_BYTES]))
        .await
        .unwrap();
    assert_eq!(temp_files(&store).len(), 1);
    // ... and what a crash leaves: a just-written temp file nobody holds, and a file that
    // is not ours.
    std::fs::write(tmp.join("upload-crashed.part"), b"half an upload").unwrap();
    std::fs::write(tmp.join("not-ours.txt"), b"keep").unwrap();

    // A second process opening the same datastore (a restart beside a live process).
    let reopened = FileDatastore::new("default", root.clone()).unwrap();
    let mut left: Vec<_> = temp_files(&reopened)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0], "not-ours.txt");
    assert!(left[1].starts_with("upload-") && left[1] != "upload-crashed.part");

    // The running upload is unharmed and finishes.
    let object = running.finish().await.unwrap().commit().await.unwrap();
    assert_eq!(object.size, WRITE_BATCH_BYTES as u64);
    assert_eq!(reopened.remove_orphan_temp_files().unwrap(), 0);
    assert_eq!(temp_files(&store).len(), 1, "only not-ours.txt");
}

#[tokio::test]
async fn an_idle_upload_holds_no_blocking_thread() {
    let (_dir, store) = store();
    let mut writers = Vec::new();
    for _ in 0..100 {
        let mut writer = store.writer(u64::MAX).unwrap();
        writer
            .write(Bytes::from_static(b"a trickle"))
            .await
            .unwrap();
        writers.push(writer);
    }
    assert_eq!(mr_storage::blocking_writes_running(), 0);
    assert!(temp_files(&store).is_empty(), "no file before a full batch");
    drop(writers);
}

#[test]
fn writer_outside_a_runtime_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::new("default", dir.path().to_owned()).unwrap();
    assert!(matches!(store.writer(10), Err(Error::NoRuntime)));
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn check_writable_notices_a_missing_directory() {
    let (_dir, store) = store();
    store.check_writable().unwrap();
    assert_eq!(
        temp_files(&store),
        Vec::<PathBuf>::new(),
        "the probe is removed"
    );
    std::fs::remove_dir_all(store.root().join("tmp")).unwrap();
    assert!(matches!(store.check_writable(), Err(Error::Io { .. })));
    std::fs::remove_dir_all(store.root()).unwrap();
    assert!(matches!(store.check_writable(), Err(Error::Io { .. })));
}
