//! Just enough of `/proc/self/mountinfo` for namespace pins: which mounts sit at or under a
//! path, and whether the state dir is already a private mount. Pure functions over text.

use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount ID (field 1).
    pub id: u32,
    /// Parent mount ID (field 2).
    pub parent: u32,
    /// Mount point, octal escapes decoded (field 5).
    pub mount_point: PathBuf,
    /// Optional fields such as `shared:12` or `master:3` (empty = private).
    pub propagation: Vec<String>,
    /// Filesystem type (after the `-` separator).
    pub fstype: String,
}

impl MountEntry {
    /// True when the mount neither sends nor receives propagation.
    pub fn is_private(&self) -> bool {
        !self
            .propagation
            .iter()
            .any(|t| t.starts_with("shared:") || t.starts_with("master:"))
    }
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let _opts = fields.next()?;
    let mut propagation = Vec::new();
    loop {
        match fields.next()? {
            "-" => break,
            tag => propagation.push(tag.to_string()),
        }
    }
    let fstype = fields.next()?.to_string();
    Some(MountEntry {
        id,
        parent,
        mount_point,
        propagation,
        fstype,
    })
}

/// Decodes mountinfo's `\ooo` octal escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at `dir` or below it, in mountinfo order (may repeat for stacked mounts).
pub fn mounts_under(text: &str, dir: &Path) -> Vec<PathBuf> {
    parse_mountinfo(text)
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point)
        .collect()
}

/// The topmost mount whose mount point is exactly `path`, if any.
pub fn top_mount_at(text: &str, path: &Path) -> Option<MountEntry> {
    let mounts = parse_mountinfo(text);
    let at: Vec<&MountEntry> = mounts.iter().filter(|m| m.mount_point == path).collect();
    // The topmost one is the one no other mount at the same point has as parent.
    at.iter()
        .find(|m| !at.iter().any(|o| o.parent == m.id))
        .map(|m| (*m).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
60 22 0:5 / /run rw,nosuid shared:20 - tmpfs tmpfs rw
71 60 0:5 /skiff /run/skiff rw,nosuid - tmpfs tmpfs rw
72 71 0:4 net:[4026532300] /run/skiff/pods/a\\040b/net rw - nsfs nsfs rw
73 71 0:4 uts:[4026532301] /run/skiff/pods/ab/uts rw master:7 - nsfs nsfs rw
74 71 0:5 /skiff /run/skiff rw,nosuid shared:40 - tmpfs tmpfs rw
75 22 0:4 net:[4026532302] /run/skiffy/net rw - nsfs nsfs rw
bad line
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 7);
        assert_eq!(m[3].mount_point, Path::new("/run/skiff/pods/a b/net"));
        assert_eq!(m[3].fstype, "nsfs");
        assert!(m[3].is_private());
        assert!(!m[4].is_private());
        assert_eq!(m[1].propagation, vec!["shared:20".to_string()]);
    }

    #[test]
    fn lists_mounts_under_a_dir_only() {
        let under = mounts_under(SAMPLE, Path::new("/run/skiff"));
        assert_eq!(under.len(), 4, "{under:?}");
        assert!(!under.contains(&PathBuf::from("/run/skiffy/net")));
        assert!(mounts_under(SAMPLE, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn finds_the_topmost_of_stacked_mounts() {
        let top = top_mount_at(SAMPLE, Path::new("/run/skiff")).unwrap();
        assert_eq!(top.id, 74);
        assert!(!top.is_private());
        assert!(top_mount_at(SAMPLE, Path::new("/run/nothing")).is_none());
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape("tab\\011x"), "tab\tx");
    }
}
