//! Layer unpacking against hostile tars: nothing may be written outside the layer directory.
//! Also checks a well-formed layer's metadata. Needs root (device nodes, ownership, trusted
//! xattrs): skips with a message when not root, fails when not root under CI.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use skiff_runtime::image::unpack::{UnpackError, unpack_layer};
use skiff_testsupport::privileged;

/// A sandbox: `layer/` is where the unpack goes; `outside/` is a sibling that must stay empty.
struct Sandbox {
    _dir: tempfile::TempDir,
    layer: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        let outside = dir.path().join("outside");
        fs::create_dir(&layer).unwrap();
        fs::create_dir(&outside).unwrap();
        Sandbox {
            _dir: dir,
            layer,
            outside,
        }
    }

    fn assert_outside_untouched(&self) {
        let entries: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert!(
            entries.is_empty(),
            "something was written outside the layer: {entries:?}"
        );
    }
}

/// Builds tars with raw header control (the tar crate's safe setters refuse `..`).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(mut self, path: &str, data: &[u8]) -> Tar {
        let mut h = Self::header(path, tar::EntryType::Regular, data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn dir(mut self, path: &str) -> Tar {
        let mut h = Self::header(path, tar::EntryType::Directory, 0);
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn link(mut self, path: &str, kind: tar::EntryType, target: &str) -> Tar {
        let mut h = Self::header(path, kind, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn unpack(sandbox: &Sandbox, tar: Tar) -> Result<(), UnpackError> {
    unpack_layer(&tar.bytes()[..], &sandbox.layer).map(|_| ())
}

#[test]
fn traversal_is_refused() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let err = unpack(&s, Tar::new().file("../outside/evil", b"x")).unwrap_err();
    assert!(matches!(err, UnpackError::ParentDir { .. }), "{err}");
    assert!(
        err.to_string().contains("../outside/evil"),
        "the error names the entry: {err}"
    );
    s.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_refused() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let target = format!("{}/evil", s.outside.display());
    let err = unpack(&s, Tar::new().file(&target, b"x")).unwrap_err();
    assert!(matches!(err, UnpackError::Absolute { .. }), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn writing_through_an_absolute_symlink_is_refused() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let outside = s.outside.display().to_string();
    let tar = Tar::new()
        .link("escape", tar::EntryType::Symlink, &outside)
        .file("escape/evil", b"x");
    let err = unpack(&s, tar).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("escape/evil"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn writing_through_a_relative_symlink_is_refused() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let tar = Tar::new()
        .dir("a")
        // From layer/a, ../../outside is the sandbox's sibling directory.
        .link("a/up", tar::EntryType::Symlink, "../../outside")
        .file("a/up/evil", b"x");
    let err = unpack(&s, tar).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn hard_links_out_of_the_layer_are_refused() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let secret = s.outside.join("secret");
    fs::write(&secret, b"host secret").unwrap();
    // Directly with '..'.
    let err = unpack(
        &s,
        Tar::new().link("hl", tar::EntryType::Link, "../outside/secret"),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
    // Through a symlink that leads out.
    let s2 = Sandbox::new();
    fs::write(s2.outside.join("secret"), b"host secret").unwrap();
    let tar = Tar::new()
        .link(
            "out",
            tar::EntryType::Symlink,
            &s2.outside.display().to_string(),
        )
        .link("hl", tar::EntryType::Link, "out/secret");
    let err = unpack(&s2, tar).unwrap_err();
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
    assert_eq!(
        fs::metadata(s2.outside.join("secret")).unwrap().nlink(),
        1,
        "no new link to the host file"
    );
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn a_later_entry_replaces_a_symlink_instead_of_following_it() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let victim = s.outside.join("victim");
    let tar = Tar::new()
        .link("f", tar::EntryType::Symlink, &victim.display().to_string())
        .file("f", b"replaced");
    unpack(&s, tar).unwrap();
    assert!(!victim.exists(), "the write went through the symlink");
    assert_eq!(fs::read(s.layer.join("f")).unwrap(), b"replaced");
    assert!(
        !fs::symlink_metadata(s.layer.join("f"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn symlinks_inside_the_layer_still_work() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let tar = Tar::new()
        .dir("usr")
        .dir("usr/lib")
        .link("lib", tar::EntryType::Symlink, "usr/lib")
        .file("lib/libc.so", b"elf")
        .link("usr/lib/hl", tar::EntryType::Link, "lib/libc.so");
    unpack(&s, tar).unwrap();
    assert_eq!(fs::read(s.layer.join("usr/lib/libc.so")).unwrap(), b"elf");
    assert_eq!(fs::metadata(s.layer.join("usr/lib/hl")).unwrap().nlink(), 2);
}

#[test]
fn metadata_and_whiteouts_are_applied() {
    if !privileged() {
        return;
    }
    let s = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("owned").unwrap();
    h.set_size(2);
    h.set_mode(0o4750);
    h.set_uid(1234);
    h.set_gid(4321);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    builder.append(&h, &b"ok"[..]).unwrap();
    let mut dev = tar::Header::new_ustar();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_path("dev/null").unwrap();
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_mode(0o666);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_mtime(0);
    dev.set_size(0);
    dev.set_cksum();
    builder.append(&dev, &[][..]).unwrap();
    for wh in [".wh.removed", "dir/.wh..wh..opq"] {
        let mut w = tar::Header::new_ustar();
        w.set_entry_type(tar::EntryType::Regular);
        w.set_path(wh).unwrap();
        w.set_size(0);
        w.set_mode(0o600);
        w.set_uid(0);
        w.set_gid(0);
        w.set_mtime(0);
        w.set_cksum();
        builder.append(&w, &[][..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let out = unpack_layer(&tar[..], &s.layer).unwrap();
    assert_eq!(out.entries, 4);

    let meta = fs::metadata(s.layer.join("owned")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o4750,
        "set-id bit survives chown"
    );
    assert_eq!(meta.mtime(), 1_600_000_000);
    let null = fs::metadata(s.layer.join("dev/null")).unwrap();
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let whiteout = fs::symlink_metadata(s.layer.join("removed")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0, "a whiteout is a 0/0 character device");
    let opaque =
        rustix::fs::getxattr(s.layer.join("dir"), "trusted.overlay.opaque", &mut [0u8; 8]).unwrap();
    assert_eq!(opaque, 1);
    assert!(!s.layer.join(".wh.removed").exists());
}

#[test]
fn the_diff_id_is_the_digest_of_the_uncompressed_tar() {
    if !privileged() {
        return;
    }
    use std::io::Write;
    let s = Sandbox::new();
    let tar = Tar::new()
        .dir("etc")
        .file("etc/hostname", b"skiff\n")
        .bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let out = unpack_layer(&gz.finish().unwrap()[..], &s.layer).unwrap();
    assert_eq!(out.diff_id, skiff_runtime::image::Digest::of(&tar));
    assert_eq!(out.size, tar.len() as u64);
}
