//! Unpacking a layer tar into a directory that overlayfs can use as a lower layer, without ever
//! writing outside that directory.
//!
//! `entry` turns each tar header into a checked plan step; `apply` carries the steps out with
//! `openat2(RESOLVE_BENEATH)`, so a symlink or hard link cannot lead a write out of the layer.

mod apply;
pub mod entry;

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use apply::Applier;
use entry::{Meta, RawEntry};

use super::digest::{Digest, HashingReader};

/// Why a layer could not be unpacked. Entry-level variants name the tar entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: absolute path refused")]
    Absolute { entry: String },
    #[error("layer entry {entry:?}: '..' in path refused")]
    ParentDir { entry: String },
    #[error("layer entry {entry:?}: path escapes the layer root through a link")]
    Escape { entry: String },
    #[error("layer entry {entry:?}: hard link target {target:?} refused: {reason}")]
    LinkTarget {
        entry: String,
        target: String,
        reason: String,
    },
    #[error("layer entry {entry:?}: unsupported entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry:?}: {reason}")]
    Malformed { entry: String, reason: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("reading layer: {0}")]
    Read(#[source] io::Error),
    #[error("opening layer directory {path}: {source}")]
    Root { path: String, source: io::Error },
}

impl UnpackError {
    /// The reason without the entry prefix, for wrapping into another entry's error.
    pub(crate) fn reason(&self) -> String {
        match self {
            UnpackError::Absolute { .. } => "absolute path".into(),
            UnpackError::ParentDir { .. } => "'..' in path".into(),
            other => other.to_string(),
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed tar stream: the layer's diffID.
    pub diff_id: Digest,
    /// Bytes of uncompressed tar.
    pub size: u64,
    pub entries: u64,
}

/// The compression a layer blob uses, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps a (possibly compressed) layer blob in the right decompressor.
pub fn decompress<'a>(blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let compression = Compression::sniff(buffered.fill_buf()?);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// Unpacks a layer blob (plain, gzip or zstd tar) into `dest`, an existing empty directory,
/// and returns the layer's diffID. Whiteouts become overlayfs whiteouts.
pub fn unpack_layer(blob: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    let tar_stream = decompress(blob).map_err(UnpackError::Read)?;
    let mut hashing = HashingReader::new(tar_stream);
    let mut applier = Applier::open(dest)?;
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            let raw_path = entry.path().map_err(UnpackError::Read)?.into_owned();
            let link_name = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .map(|l| l.into_owned());
            let meta = meta_of(&mut entry).map_err(UnpackError::Read)?;
            let header = entry.header();
            let device = (
                header.device_major().ok().flatten().unwrap_or(0),
                header.device_minor().ok().flatten().unwrap_or(0),
            );
            let raw = RawEntry {
                path: &raw_path,
                entry_type: header.entry_type(),
                link_name: link_name.as_deref(),
                device,
                meta,
            };
            if let Some(op) = entry::plan(&raw)? {
                applier.apply(&op, &mut entry)?;
                entries += 1;
            }
        }
    }
    applier.finish()?;
    let (diff_id, size) = hashing.finish().map_err(UnpackError::Read)?;
    Ok(Unpacked {
        diff_id,
        size,
        entries,
    })
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode()? & 0o7777,
        uid: u32::try_from(header.uid()?).map_err(io::Error::other)?,
        gid: u32::try_from(header.gid()?).map_err(io::Error::other)?,
        mtime: i64::try_from(header.mtime()?).unwrap_or(0),
        xattrs: Vec::new(),
    };
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                meta.xattrs
                    .push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/\0\0"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn decompresses_every_kind_to_the_same_bytes() {
        use std::io::Write;
        let data = b"hello layer".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for blob in [data.clone(), gz, zst] {
            let mut out = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
