//! Content digests (`sha256:<hex>`) and the readers and writers that compute them on the way.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A `sha256:` content digest. Other algorithms are refused when parsed: every digest skiff
/// stores was computed and checked by skiff.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix")]
    NoAlgorithm(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    Algorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex characters")]
    Hex(String),
}

impl Digest {
    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex characters without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::NoAlgorithm(s.into()))?;
        if algorithm != "sha256" {
            return Err(DigestError::Algorithm(algorithm.into()));
        }
        let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex.len() != 64 || !hex.chars().all(lower_hex) {
            return Err(DigestError::Hex(s.into()));
        }
        Ok(Digest { hex: hex.into() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes everything that passes through it, counting bytes.
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            sha: Sha256::new(),
            len: 0,
        }
    }
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.sha.finalize()),
        }
    }
}

/// A reader that hashes what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads what is left (a tar stream may end before its padding), then returns the digest
    /// and length of everything read.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what is written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest {
            hex: hex::encode(self.hasher.sha.clone().finalize()),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn into_parts(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_bytes_matches_sha256() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(
            Digest::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(EMPTY.parse::<Digest>().unwrap().to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap().short(), "e3b0c44298fc");
        assert!(matches!(
            "e3b0".parse::<Digest>(),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:E3B0".parse::<Digest>(),
            Err(DigestError::Hex(_))
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(upper.parse::<Digest>(), Err(DigestError::Hex(_))));
    }

    #[test]
    fn hashing_reader_and_writer_agree() {
        let data = vec![7u8; 100_000];
        let reader = HashingReader::new(&data[..]);
        let (d1, n1) = reader.finish().unwrap();
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let (out, d2, n2) = writer.into_parts();
        assert_eq!((d1.clone(), n1), (d2, n2));
        assert_eq!(out, data);
        assert_eq!(d1, Digest::of(&data));
    }

    #[test]
    fn serde_round_trip_checks_the_digest() {
        let d: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
