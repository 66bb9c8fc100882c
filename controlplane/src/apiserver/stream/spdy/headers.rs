//! SPDY/3 header blocks: name/value pairs with 32-bit lengths, compressed with zlib primed
//! with the SPDY dictionary. Each direction of a connection is one zlib stream (every block
//! ends with a sync flush), so a connection keeps one inflater and one deflater for its
//! whole life. Decoding bounds the inflated size and never panics on hostile input.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// The most a header block may inflate to.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// A header block could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block: zlib: {0}")]
    Zlib(String),
    #[error("header block inflates past {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("header block is truncated ({what})")]
    Truncated { what: &'static str },
    #[error("header block claims {count} pairs in {len} bytes")]
    BadCount { count: u32, len: usize },
    #[error("header block has an empty header name")]
    EmptyName,
}

/// Header name/value pairs; names lower-case, a value per entry (SPDY's NUL-separated
/// multiple values become several entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Builds headers from pairs.
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
        )
    }
}

fn read_u32(data: &[u8], at: &mut usize, what: &'static str) -> Result<u32, HeaderError> {
    let bytes = data
        .get(*at..*at + 4)
        .ok_or(HeaderError::Truncated { what })?;
    *at += 4;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn read_bytes<'a>(
    data: &'a [u8],
    at: &mut usize,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], HeaderError> {
    let len = usize::try_from(len).map_err(|_| HeaderError::Truncated { what })?;
    let end = at.checked_add(len).ok_or(HeaderError::Truncated { what })?;
    let bytes = data.get(*at..end).ok_or(HeaderError::Truncated { what })?;
    *at = end;
    Ok(bytes)
}

/// Parses an inflated header block.
pub fn parse_block(data: &[u8]) -> Result<Headers, HeaderError> {
    let mut at = 0;
    let count = read_u32(data, &mut at, "pair count")?;
    // Every pair takes at least its two length fields.
    if usize::try_from(count).map_or(true, |c| c > data.len().saturating_sub(4) / 8) {
        return Err(HeaderError::BadCount {
            count,
            len: data.len(),
        });
    }
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = read_u32(data, &mut at, "name length")?;
        let name = read_bytes(data, &mut at, len, "name")?;
        if name.is_empty() {
            return Err(HeaderError::EmptyName);
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let len = read_u32(data, &mut at, "value length")?;
        let value = read_bytes(data, &mut at, len, "value")?;
        for part in value.split(|b| *b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(part).into_owned()));
        }
    }
    Ok(Headers(headers))
}

/// Serialises headers (before compression); several values of a name are joined by NUL.
pub fn serialize_block(headers: &Headers) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in &headers.0 {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for name in names {
        let values: Vec<&str> = headers
            .0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        let value = values.join("\0");
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The receiving direction's zlib stream.
pub struct HeaderInflater {
    z: Decompress,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        HeaderInflater {
            z: Decompress::new(true),
        }
    }
}

impl HeaderInflater {
    /// Inflates and parses one header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        parse_block(&self.inflate(block)?)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity((input.len() * 4).clamp(256, 16 * 1024));
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve((out.len()).clamp(256, MAX_HEADER_BLOCK - out.len()));
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.z.total_in() - in_before).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or_default();
            match result {
                Ok(Status::Ok | Status::BufError) => {}
                // The peer ended its stream: this block is complete, later ones will fail.
                Ok(Status::StreamEnd) => return Ok(out),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            }
            let room_left = out.len() < out.capacity();
            if input.is_empty() && room_left {
                return Ok(out);
            }
            if consumed == 0 && out.len() == out_before && room_left {
                // No progress with room to spare: the block is cut short.
                return Err(HeaderError::Truncated {
                    what: "compressed data",
                });
            }
        }
    }
}

/// The sending direction's zlib stream.
pub struct HeaderDeflater {
    z: Compress,
}

impl HeaderDeflater {
    /// A stream primed with the dictionary.
    pub fn new() -> Result<HeaderDeflater, HeaderError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&DICTIONARY)
            .map_err(|e| HeaderError::Zlib(e.to_string()))?;
        Ok(HeaderDeflater { z })
    }

    /// Serialises and compresses one header block (sync-flushed).
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        let raw = serialize_block(headers);
        let mut input = raw.as_slice();
        let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            let consumed = usize::try_from(self.z.total_in() - before).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or_default();
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_through_one_stream_per_direction() {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let mut inflater = HeaderInflater::default();
        let first =
            Headers::from_pairs(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
        let second = Headers::from_pairs(&[("streamtype", "data"), ("port", "80")]);
        let a = deflater.encode(&first).expect("encode");
        let b = deflater.encode(&second).expect("encode");
        // The second block leans on the first's history: it only decodes in order.
        assert_eq!(inflater.decode(&a).expect("decode"), first);
        assert_eq!(inflater.decode(&b).expect("decode"), second);
        let empty = deflater.encode(&Headers::default()).expect("encode");
        assert_eq!(inflater.decode(&empty).expect("decode"), Headers::default());
    }

    #[test]
    fn the_stream_names_the_spdy_dictionary() {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let block = deflater
            .encode(&Headers::from_pairs(&[("a", "b")]))
            .expect("encode");
        // zlib header: FDICT set, then the dictionary's Adler-32.
        assert_eq!(block[1] & 0x20, 0x20);
        assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        // A plain zlib stream (no dictionary) cannot read it.
        let mut plain = Decompress::new(true);
        let mut out = Vec::with_capacity(1024);
        assert!(
            plain
                .decompress_vec(&block, &mut out, FlushDecompress::Sync)
                .is_err()
        );
    }

    #[test]
    fn multiple_values_are_nul_separated() {
        let headers = Headers::from_pairs(&[("x", "1"), ("x", "2"), ("y", "")]);
        let raw = serialize_block(&headers);
        assert_eq!(
            raw,
            b"\0\0\0\x02\0\0\0\x01x\0\0\0\x031\x002\0\0\0\x01y\0\0\0\0".to_vec()
        );
        assert_eq!(parse_block(&raw).expect("parse"), headers);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        assert_eq!(
            parse_block(b"\xff\xff\xff\xff"),
            Err(HeaderError::BadCount {
                count: u32::MAX,
                len: 4
            })
        );
        assert!(matches!(
            parse_block(b"\0\0\0\x01\0\0\0\x05ab\0\0\0\0"),
            Err(HeaderError::Truncated { .. })
        ));
        assert!(matches!(
            parse_block(b"\0\0\0\x01\xff\xff\xff\xffab\0\0\0\0"),
            Err(HeaderError::Truncated { .. })
        ));
        assert_eq!(
            parse_block(b"\0\0\0\x01\0\0\0\0\0\0\0\0"),
            Err(HeaderError::EmptyName)
        );
        assert!(matches!(
            parse_block(b"\0\0"),
            Err(HeaderError::Truncated { .. })
        ));
        let mut inflater = HeaderInflater::default();
        assert!(inflater.decode(b"not zlib at all").is_err());
        let mut inflater = HeaderInflater::default();
        assert!(inflater.decode(b"").is_err());
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let mut deflater = HeaderDeflater::new().expect("deflater");
        let big = "a".repeat(MAX_HEADER_BLOCK * 2);
        let block = deflater
            .encode(&Headers::from_pairs(&[("x", &big)]))
            .expect("encode");
        assert!(block.len() < 8 * 1024, "{}", block.len());
        let mut inflater = HeaderInflater::default();
        assert_eq!(inflater.decode(&block), Err(HeaderError::TooLarge));
    }
}
