//! The atomic writer in a temp dir (no root): the `..data` layout, updates that add and
//! remove keys, modes, no-op rewrites, and a concurrent reader that never finds `..data`
//! missing or a mix of two versions.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn payload(files: &[(&str, &str, u32)]) -> Payload {
    files
        .iter()
        .map(|(p, d, m)| {
            let file = FileProjection {
                data: d.as_bytes().to_vec(),
                mode: *m,
            };
            (p.to_string(), file)
        })
        .collect()
}

/// A timestamped data dir's name (`..2026_…`).
fn is_ts(name: &str) -> bool {
    name.strip_prefix("..")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The volume dir's entries, sorted, with data dirs shown as `..TS`.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let name = if is_ts(&name) { "..TS".into() } else { name };
            match fs::read_link(e.path()) {
                Ok(t) if !is_ts(&t.to_string_lossy()) => format!("{name} -> {}", t.display()),
                Ok(_) => format!("{name} -> ..TS"),
                Err(_) => name,
            }
        })
        .collect();
    names.sort();
    names
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(123_456_789)
}

#[test]
fn data_dirs_are_named_after_the_utc_time() {
    // 2026-11-23 10:00:00 UTC.
    assert_eq!(
        data_dir_name(at(1_795_428_000), 0),
        "..2026_11_23_10_00_00.123456789"
    );
    assert_eq!(data_dir_name(at(0), 1), "..1970_01_01_00_00_00.123456790");
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
}

#[test]
fn first_write_makes_the_data_dir_the_link_and_visible_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = payload(&[
        ("a.conf", "A", 0o644),
        ("secret", "S", 0o400),
        ("sub/x", "X", 0o600),
    ]);
    assert!(write(dir, &files, None, at(1_795_428_000)).unwrap());
    assert_eq!(
        entries(dir),
        [
            "..TS",
            "..data -> ..TS",
            "a.conf -> ..data/a.conf",
            "secret -> ..data/secret",
            "sub -> ..data/sub",
        ]
    );
    assert_eq!(
        fs::read_link(dir.join(DATA_LINK)).unwrap(),
        Path::new("..2026_11_23_10_00_00.123456789")
    );
    assert_eq!(fs::read_to_string(dir.join("sub/x")).unwrap(), "X");
    let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        (mode("a.conf"), mode("secret"), mode("sub/x"), mode("sub")),
        (0o644, 0o400, 0o600, 0o755)
    );
}

#[test]
fn an_update_swaps_the_set_and_removes_what_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = payload(&[
        ("keep", "1", 0o644),
        ("gone", "old", 0o644),
        ("d/x", "x", 0o644),
    ]);
    assert!(write(dir, &first, None, at(100)).unwrap());
    assert!(
        !write(dir, &first, None, at(200)).unwrap(),
        "the same content: nothing written"
    );
    assert_eq!(
        fs::read_link(dir.join(DATA_LINK)).unwrap(),
        Path::new(&data_dir_name(at(100), 0))
    );
    let second = payload(&[("keep", "2", 0o644), ("new", "n", 0o640)]);
    assert!(write(dir, &second, None, at(300)).unwrap());
    assert_eq!(
        entries(dir),
        [
            "..TS",
            "..data -> ..TS",
            "keep -> ..data/keep",
            "new -> ..data/new"
        ],
        "one data dir; `gone` and `d` unlinked"
    );
    assert_eq!(fs::read_to_string(dir.join("keep")).unwrap(), "2");
    let mode_only = payload(&[("keep", "2", 0o600), ("new", "n", 0o640)]);
    assert!(
        write(dir, &mode_only, None, at(400)).unwrap(),
        "a mode change rewrites"
    );
    assert!(write(dir, &Payload::new(), None, at(500)).unwrap());
    assert_eq!(entries(dir), ["..TS", "..data -> ..TS"]);
}

#[test]
fn leftovers_of_an_interrupted_write_are_removed_and_links_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = payload(&[("a", "1", 0o644)]);
    write(dir, &files, None, at(100)).unwrap();
    fs::create_dir(dir.join("..1999_01_01_00_00_00.000000001")).unwrap();
    fs::remove_file(dir.join("a")).unwrap();
    assert!(!write(dir, &files, None, at(200)).unwrap());
    assert_eq!(entries(dir), ["..TS", "..data -> ..TS", "a -> ..data/a"]);
}

#[test]
fn bad_paths_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../x", "/etc/passwd", "..data", "a/../../b", "", "a//b"] {
        let err = write(tmp.path(), &payload(&[(bad, "x", 0o644)]), None, at(1)).unwrap_err();
        assert!(
            matches!(err, AtomicError::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
    let err = write(
        tmp.path(),
        &payload(&[("a", "1", 0o644), ("a/b", "2", 0o644)]),
        None,
        at(1),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "file \"a/b\": a is also a file");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn a_reader_never_sees_data_missing_or_two_versions_mixed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let version = |n: usize| {
        let v = format!("{n}:").repeat(100);
        let mut files = payload(&[("a", &v, 0o644), ("b", &v, 0o644)]);
        if n.is_multiple_of(2) {
            files.extend(payload(&[("even", "e", 0o644)]));
        }
        files
    };
    write(&dir, &version(0), None, SystemTime::now()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dir, done) = (dir.clone(), done.clone());
        std::thread::spawn(move || {
            let mut consistent = 0;
            while !done.load(Ordering::Relaxed) {
                let target = fs::read_link(dir.join(DATA_LINK)).expect("..data is always there");
                let data = dir.join(target);
                // The old data dir goes after the swap: a reader that resolved `..data` just
                // before may find it gone, never half-written.
                let (Ok(a), Ok(b)) = (
                    fs::read_to_string(data.join("a")),
                    fs::read_to_string(data.join("b")),
                ) else {
                    continue;
                };
                assert_eq!(a, b, "a and b from one version");
                let first = a.split(':').next().unwrap().to_string();
                assert_eq!(a, format!("{first}:").repeat(100), "a whole file");
                consistent += 1;
            }
            consistent
        })
    };
    for n in 1..300 {
        assert!(write(&dir, &version(n), None, SystemTime::now()).unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let consistent = reader.join().unwrap();
    assert!(consistent > 0, "the reader read something");
    assert_eq!(
        entries(&dir),
        ["..TS", "..data -> ..TS", "a -> ..data/a", "b -> ..data/b"]
    );
}
