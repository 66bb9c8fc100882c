//! Reading CRI-format container logs (`<RFC3339Nano> stdout|stderr F|P <text>`), as skiff-init
//! writes them: whole lines reassembled from `P` pieces, optionally only the last N.

use std::path::Path;

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
    let mut text = std::fs::read_to_string(dir.join(format!("{name}.1"))).unwrap_or_default();
    match std::fs::read_to_string(dir.join(name)) {
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
