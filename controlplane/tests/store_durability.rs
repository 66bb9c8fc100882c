//! Every write the embedded store acknowledged survives `kill -9` of the process.
//!
//! The test re-runs its own binary as a child (`durability_child`, selected by an env var)
//! that creates keys from several tasks and prints each acknowledged one; the parent
//! SIGKILLs it mid-stream, reopens the store and checks every printed key and revision.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use skiff_controlplane::store::{EmbeddedStore, Store};

const CHILD_ENV: &str = "SKIFF_DURABILITY_CHILD_DIR";
const WRITERS: usize = 8;
/// Acknowledgements to see before the kill.
const KILL_AFTER: usize = 300;
const DEADLINE: Duration = Duration::from_secs(60);

/// An acknowledged write as the child printed it: `ack <key> <revision>`.
#[derive(Debug)]
struct Ack {
    key: String,
    revision: u64,
}

fn value_of(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let key = parts.next()?.to_owned();
    let revision = parts.next()?.parse().ok()?;
    Some(Ack { key, revision })
}

/// The child: writes until killed. Does nothing unless started by the parent.
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
fn durability_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = std::sync::Arc::new(EmbeddedStore::open(dir.as_ref()).expect("open store"));
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/durability/w{writer}/{i:06}");
                    let kv = store.create(&key, value_of(&key)).await.expect("create");
                    // println! locks stdout per line; lines never interleave.
                    println!("ack {key} {}", kv.mod_revision);
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer task");
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "durability_child", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acks = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while acks.len() < KILL_AFTER {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(error) => {
                let _ = child.kill();
                panic!("child gave {} acks before {error:?}", acks.len());
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
    // Lines printed before the kill are acknowledged writes too.
    acks.extend(lines.iter().filter_map(|line| parse_ack(&line)));
    reader.join().expect("reader thread");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(check_acks(dir.path(), &acks));
}

async fn check_acks(dir: &std::path::Path, acks: &[Ack]) {
    let store = EmbeddedStore::open(dir).expect("reopen after SIGKILL");
    for ack in acks {
        let kv = store.get(&ack.key).await.expect("get");
        let kv = kv.unwrap_or_else(|| panic!("acknowledged {} is lost", ack.key));
        assert_eq!(kv.value, value_of(&ack.key));
        assert_eq!(kv.mod_revision, ack.revision, "{}", ack.key);
    }
    let highest = acks.iter().map(|a| a.revision).max().expect("some acks");
    let current = store.current_revision().await.expect("current revision");
    assert!(
        current >= highest,
        "revision went back: {current} < {highest}"
    );
    let next = store
        .create("/durability/after", b"x".to_vec())
        .await
        .expect("create");
    assert_eq!(
        next.mod_revision,
        current + 1,
        "the revision counter continues"
    );
    eprintln!(
        "{} acknowledged writes survived SIGKILL (revision {current})",
        acks.len()
    );
}
