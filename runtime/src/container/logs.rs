//! Reading CRI-format container logs (`<RFC3339Nano> stdout|stderr F|P <text>`), as skiff-init
//! writes them: whole lines reassembled from `P` pieces, optionally only the last N.
//!
//! One container instance's log is `DIR/NAME` and, once skiff-init has rotated it by size,
//! `DIR/NAME.1` (older). When a container is replaced by a new instance (a restart),
//! [`retire`] moves the old instance's files to `DIR/previous/`, so exactly one previous
//! instance is kept, as `kubectl logs --previous` reads it.

use std::path::{Path, PathBuf};

/// Where the previous instance's files go, below the log directory.
pub const PREVIOUS_DIR: &str = "previous";

/// The files of one instance's log, oldest first: `NAME.1` (rotated) and `NAME` (current).
pub fn files(dir: &Path, name: &str) -> [PathBuf; 2] {
    [dir.join(format!("{name}.1")), dir.join(name)]
}

/// The directory holding the previous instance's log (same file names).
pub fn previous_dir(dir: &Path) -> PathBuf {
    dir.join(PREVIOUS_DIR)
}

/// Makes the current instance's log the previous one (replacing an older previous one), so
/// that a new instance starts an empty log. Nothing to move is fine.
pub fn retire(dir: &Path, name: &str) -> std::io::Result<()> {
    let previous = previous_dir(dir);
    std::fs::create_dir_all(&previous)?;
    for (from, to) in files(dir, name).iter().zip(files(&previous, name)) {
        match std::fs::rename(from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::remove_file(&to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One log line as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    pub text: String,
}

/// Parses a CRI log's text into whole lines; malformed records are skipped.
pub fn parse(text: &str) -> Vec<LogLine> {
    let mut lines = Vec::new();
    let mut pending: Option<LogLine> = None;
    for record in text.lines() {
        let mut parts = record.splitn(4, ' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let body = parts.next().unwrap_or("");
        let line = pending.get_or_insert_with(|| LogLine {
            timestamp: ts.to_string(),
            stream: stream.to_string(),
            text: String::new(),
        });
        line.text.push_str(body);
        if tag == "F" {
            lines.extend(pending.take());
        }
    }
    lines.extend(pending);
    lines
}

/// The container's log lines (the rotated file first), the last `tail` of them if given.
pub fn read(dir: &Path, name: &str, tail: Option<usize>) -> std::io::Result<Vec<LogLine>> {
    let [rotated, current] = files(dir, name);
    let mut text = std::fs::read_to_string(rotated).unwrap_or_default();
    match std::fs::read_to_string(current) {
        Ok(current) => text.push_str(&current),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut lines = parse(&text);
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_keeps_exactly_one_previous_instance() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let previous = |name: &str| std::fs::read_to_string(previous_dir(dir.path()).join(name));
        write("0.log.1", "first-rotated");
        write("0.log", "first");
        retire(dir.path(), "0.log").unwrap();
        assert_eq!(previous("0.log.1").unwrap(), "first-rotated");
        assert_eq!(previous("0.log").unwrap(), "first");
        assert!(!dir.path().join("0.log").exists());
        // The second instance never rotated: no stale rotated file of the first stays.
        write("0.log", "second");
        retire(dir.path(), "0.log").unwrap();
        assert_eq!(previous("0.log").unwrap(), "second");
        assert!(previous("0.log.1").is_err());
        // An instance that wrote nothing leaves an empty previous log.
        retire(dir.path(), "0.log").unwrap();
        assert!(previous("0.log").is_err());
    }

    #[test]
    fn joins_partial_records() {
        let text = "2026-01-01T00:00:00.000000001Z stdout P abc\n\
                    2026-01-01T00:00:00.000000002Z stdout F def\n\
                    2026-01-01T00:00:00.000000003Z stderr F oops\n\
                    garbage\n\
                    2026-01-01T00:00:00.000000004Z stdout F \n";
        let lines = parse(text);
        let texts: Vec<_> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [("stdout", "abcdef"), ("stderr", "oops"), ("stdout", "")]
        );
        assert_eq!(lines[0].timestamp, "2026-01-01T00:00:00.000000001Z");
    }
}
