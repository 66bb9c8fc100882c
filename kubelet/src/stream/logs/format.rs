//! From CRI log records (`<RFC3339Nano> stdout|stderr F|P <content>`) to what `kubectl logs`
//! prints, as the kubelet does it (`pkg/kubelet/kuberuntime/logs`): a `P` record's content is
//! written without a newline so pieces join into one line; `timestamps` prefixes each line
//! (not each piece) with its first record's time in RFC 3339 with nine fraction digits;
//! `since` drops older records; `limitBytes` cuts the output, mid-line if it must. Pure: the
//! reader (`follow.rs`) feeds it one record at a time.

use std::collections::VecDeque;
use std::io::BufRead;

use jiff::Timestamp;

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: Timestamp,
    pub stream: &'a [u8],
    /// `P`: a piece of a longer line, continued by the next record.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one record (its trailing newline, if any, is ignored). `None` for a malformed one.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |&c| c == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let stream = parts.next()?;
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or(b""),
    })
}

/// `2006-01-02T15:04:05.000000000Z` (Go's RFC3339NanoFixed, in UTC), as kubelet prints it.
pub fn format_time(time: Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        time.strftime("%Y-%m-%dT%H:%M:%S"),
        time.subsec_nanosecond()
    )
}

/// What the user asked of the log (`tailLines` is applied by [`tail_start`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// Turns records into output bytes.
#[derive(Debug)]
pub struct Formatter {
    opts: LogOptions,
    remaining: Option<u64>,
    /// The previous record ended a line: the next one starts a new line (gets a prefix).
    at_line_start: bool,
}

impl Formatter {
    pub fn new(opts: LogOptions) -> Formatter {
        Formatter {
            remaining: opts.limit_bytes,
            opts,
            at_line_start: true,
        }
    }

    /// The byte limit has been reached: nothing more will be written.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Appends what one raw record (a line of the log file) prints to `out`; malformed
    /// records print nothing.
    pub fn push(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let Some(record) = parse_record(raw) else {
            return;
        };
        if self.opts.since.is_some_and(|since| record.time < since) {
            return;
        }
        let start = out.len();
        if self.opts.timestamps && self.at_line_start {
            out.extend_from_slice(format_time(record.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(record.content);
        if !record.partial {
            out.push(b'\n');
        }
        self.at_line_start = !record.partial;
        if let Some(left) = self.remaining.as_mut() {
            let written = (out.len() - start) as u64;
            if written > *left {
                out.truncate(start + *left as usize);
            }
            *left = left.saturating_sub(written);
        }
    }
}

/// A place in an instance's log files (`logs::files`: rotated, then current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub file: usize,
    pub offset: u64,
}

/// Where the last `lines` whole lines of `files` (oldest first) begin; a line of several `P`
/// records begins at its first one. Fewer lines than asked: the very start. Zero lines: the
/// end of the last file.
pub fn tail_start<R: BufRead>(files: &mut [R], lines: usize) -> std::io::Result<Position> {
    let mut starts: VecDeque<Position> = VecDeque::new();
    let mut at_line_start = true;
    let mut end = Position::default();
    let mut record = Vec::new();
    for (file, reader) in files.iter_mut().enumerate() {
        let mut offset = 0u64;
        loop {
            record.clear();
            let n = reader.read_until(b'\n', &mut record)?;
            if n == 0 {
                break;
            }
            if at_line_start && lines > 0 {
                starts.push_back(Position { file, offset });
                if starts.len() > lines {
                    starts.pop_front();
                }
            }
            at_line_start = !parse_record(&record).is_some_and(|r| r.partial);
            offset += n as u64;
        }
        end = Position { file, offset };
    }
    Ok(match (lines, starts.front()) {
        (0, _) => end,
        (_, Some(first)) if starts.len() == lines => *first,
        _ => Position::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000001Z stdout F one\n\
                       2026-01-01T00:00:02.000000000Z stderr P tw\n\
                       2026-01-01T00:00:03.000000000Z stderr F o\n\
                       not a record\n\
                       2026-01-01T00:00:04.5Z stdout F three\n";

    fn render(opts: LogOptions, log: &str) -> String {
        let mut f = Formatter::new(opts);
        let mut out = Vec::new();
        for line in log.split_inclusive('\n') {
            f.push(line.as_bytes(), &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_records_join_and_malformed_ones_are_skipped() {
        assert_eq!(render(LogOptions::default(), LOG), "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_prefix_each_line_once_with_nine_fraction_digits() {
        let opts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            render(opts, LOG),
            "2026-01-01T00:00:01.000000001Z one\n\
             2026-01-01T00:00:02.000000000Z two\n\
             2026-01-01T00:00:04.500000000Z three\n"
        );
    }

    #[test]
    fn since_drops_older_records() {
        let opts = LogOptions {
            since: Some("2026-01-01T00:00:03Z".parse().unwrap()),
            ..LogOptions::default()
        };
        // The piece before `since` goes, the one after stays (kubelet filters by record).
        assert_eq!(render(opts, LOG), "o\nthree\n");
    }

    #[test]
    fn limit_bytes_cuts_mid_line_and_then_stops() {
        for (limit, want) in [
            (0, ""),
            (2, "on"),
            (4, "one\n"),
            (6, "one\ntw"),
            (100, "one\ntwo\nthree\n"),
        ] {
            let opts = LogOptions {
                limit_bytes: Some(limit),
                ..LogOptions::default()
            };
            assert_eq!(render(opts, LOG), want, "limit {limit}");
        }
    }

    #[test]
    fn tail_counts_whole_lines_across_the_rotated_file() {
        let rotated = "2026-01-01T00:00:00Z stdout F zero\n2026-01-01T00:00:00Z stdout P a\n";
        let current = "2026-01-01T00:00:00Z stdout F b\n2026-01-01T00:00:00Z stdout F c\n";
        let start = |n| {
            let mut files = [rotated.as_bytes(), current.as_bytes()];
            tail_start(&mut files, n).unwrap()
        };
        assert_eq!(
            start(1),
            Position {
                file: 1,
                offset: 32
            }
        );
        // "ab" starts in the rotated file, at its `P` record.
        assert_eq!(
            start(2),
            Position {
                file: 0,
                offset: 35
            }
        );
        assert_eq!(start(3), Position { file: 0, offset: 0 });
        assert_eq!(start(10), Position { file: 0, offset: 0 });
        assert_eq!(
            start(0),
            Position {
                file: 1,
                offset: current.len() as u64
            }
        );
        let mut none: [&[u8]; 2] = [b"", b""];
        assert_eq!(tail_start(&mut none, 5).unwrap(), Position::default());
    }

    #[test]
    fn records_parse_or_are_refused() {
        let r = parse_record(b"2026-01-01T00:00:00.1Z stdout P a b\n").unwrap();
        assert_eq!(
            (r.stream, r.partial, r.content),
            (&b"stdout"[..], true, &b"a b"[..])
        );
        assert_eq!(
            parse_record(b"2026-01-01T00:00:00Z stdout F")
                .unwrap()
                .content,
            b""
        );
        for bad in [
            &b"x stdout F a"[..],
            b"2026-01-01T00:00:00Z stdout X a",
            b"",
        ] {
            assert!(parse_record(bad).is_none(), "{bad:?}");
        }
    }
}
