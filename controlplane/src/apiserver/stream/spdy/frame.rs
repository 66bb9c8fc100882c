//! SPDY/3.1 frames on the wire: an 8-byte header (control bit, version 3 and type, or a
//! stream id; flags; a 24-bit length) and the payload. The decoder takes bytes as they
//! arrive and answers a frame, "need more", or an error — never a panic, whatever the
//! bytes; header blocks go through the connection's inflater (`headers.rs`).

use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{HeaderDeflater, HeaderError, HeaderInflater, Headers};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The largest payload a frame can carry (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes used here.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    #[cfg(test)]
    pub const CANCEL: u32 = 5;
}

/// GOAWAY status codes used here.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame type this implementation does not know (the spec says: ignore).
    Unknown {
        frame_type: u16,
    },
}

/// A frame could not be decoded or encoded; the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("{frame} frame with a payload of {len} bytes")]
    Length { frame: &'static str, len: usize },
    #[error("{frame} frame for stream 0")]
    StreamZero { frame: &'static str },
    #[error("payload of {0} bytes does not fit a frame")]
    TooLarge(usize),
    #[error(transparent)]
    Header(#[from] HeaderError),
}

fn u31(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff
}

fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Reads frames; owns the receiving direction's header inflater.
#[derive(Default)]
pub struct Decoder {
    inflater: HeaderInflater,
}

impl Decoder {
    /// The next frame from `buf` (its bytes consumed), or `None` until more bytes arrive.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + len {
            // Not reserved up front: a hostile length costs nothing until bytes arrive.
            return Ok(None);
        }
        let head = buf.split_to(8);
        let payload = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: u31(&head[..4]),
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let frame_type = u16::from_be_bytes([head[2], head[3]]);
        self.control(frame_type, flags, &payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        let need = |frame: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(FrameError::Length {
                    frame,
                    len: p.len(),
                })
            }
        };
        let nonzero = |frame: &'static str, id: u32| {
            if id == 0 {
                Err(FrameError::StreamZero { frame })
            } else {
                Ok(id)
            }
        };
        Ok(match frame_type {
            SYN_STREAM => {
                need("SYN_STREAM", p.len() >= 10)?;
                // Decode the block first: the zlib stream must see every block in order.
                let headers = self.inflater.decode(&p[10..])?;
                Frame::SynStream {
                    stream_id: nonzero("SYN_STREAM", u31(&p[..4]))?,
                    associated: u31(&p[4..8]),
                    priority: p[8] >> 5,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                let name = if frame_type == SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(name, p.len() >= 4)?;
                let headers = self.inflater.decode(&p[4..])?;
                let stream_id = nonzero(name, u31(&p[..4]))?;
                if frame_type == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need("RST_STREAM", p.len() == 8)?;
                Frame::RstStream {
                    stream_id: u31(&p[..4]),
                    status: u32_at(&p[4..8]),
                }
            }
            SETTINGS => {
                need("SETTINGS", p.len() >= 4)?;
                let count = usize::try_from(u32_at(&p[..4])).unwrap_or(usize::MAX);
                need(
                    "SETTINGS",
                    count
                        .checked_mul(8)
                        .and_then(|n| n.checked_add(4))
                        .is_some_and(|n| n == p.len()),
                )?;
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|e| Setting {
                        flags: e[0],
                        id: u32::from_be_bytes([0, e[1], e[2], e[3]]),
                        value: u32_at(&e[4..8]),
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & 0x01 != 0,
                    entries,
                }
            }
            PING => {
                need("PING", p.len() == 4)?;
                Frame::Ping { id: u32_at(p) }
            }
            GOAWAY => {
                need("GOAWAY", p.len() == 8)?;
                Frame::GoAway {
                    last_good: u31(&p[..4]),
                    status: u32_at(&p[4..8]),
                }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", p.len() == 8)?;
                Frame::WindowUpdate {
                    stream_id: u31(&p[..4]),
                    delta: u31(&p[4..8]),
                }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }
}

/// Writes frames; owns the sending direction's header deflater.
pub struct Encoder {
    deflater: HeaderDeflater,
}

fn control_head(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    len: usize,
) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32((u32::from(flags) << 24) | len as u32);
    Ok(())
}

fn fin_flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

impl Encoder {
    pub fn new() -> Result<Encoder, FrameError> {
        Ok(Encoder {
            deflater: HeaderDeflater::new()?,
        })
    }

    /// Appends `frame` to `dst`.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflater.encode(headers)?;
                let flags = fin_flag(*fin)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control_head(dst, SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(associated & 0x7fff_ffff);
                dst.put_u8((priority & 0x07) << 5);
                dst.put_u8(0);
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.deflater.encode(headers)?;
                control_head(dst, frame_type, fin_flag(*fin), 4 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_head(dst, RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::Settings { clear, entries } => {
                control_head(dst, SETTINGS, u8::from(*clear), 4 + 8 * entries.len())?;
                dst.put_u32(entries.len() as u32);
                for e in entries {
                    dst.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    dst.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control_head(dst, PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway { last_good, status } => {
                control_head(dst, GOAWAY, 0, 8)?;
                dst.put_u32(last_good & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_head(dst, WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(FrameError::TooLarge(data.len()));
                }
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32((u32::from(fin_flag(*fin)) << 24) | data.len() as u32);
                dst.put_slice(data);
            }
            Frame::Unknown { frame_type } => {
                control_head(dst, *frame_type, 0, 0)?;
            }
        }
        Ok(())
    }
}

/// Decodes every frame in `data` until it runs out or fails (for fuzzing and tests).
pub fn decode_all(data: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 3,
                fin: false,
                unidirectional: false,
                headers: Headers::from_pairs(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 65_536,
                }],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good: 3,
                status: goaway::OK,
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: Headers::from_pairs(&[("x", "y")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1024,
            },
        ]
    }

    #[test]
    fn every_frame_kind_round_trips_in_one_byte_stream() {
        let frames = all_kinds();
        let mut encoder = Encoder::new().expect("encoder");
        let mut wire = BytesMut::new();
        for f in &frames {
            encoder.encode(f, &mut wire).expect("encode");
        }
        assert_eq!(decode_all(&wire).expect("decode"), frames);
    }

    #[test]
    fn frames_arriving_a_byte_at_a_time_decode_the_same() {
        let frames = all_kinds();
        let mut encoder = Encoder::new().expect("encoder");
        let mut wire = BytesMut::new();
        for f in &frames {
            encoder.encode(f, &mut wire).expect("encode");
        }
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(f) = decoder.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn the_wire_layout_is_spdy3() {
        let mut encoder = Encoder::new().expect("encoder");
        let mut wire = BytesMut::new();
        encoder
            .encode(&Frame::Ping { id: 0x0102_0304 }, &mut wire)
            .expect("encode");
        assert_eq!(
            &wire[..],
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x01\x02\x03\x04"
        );
        wire.clear();
        encoder
            .encode(
                &Frame::Data {
                    stream_id: 5,
                    fin: true,
                    data: Bytes::from_static(b"ab"),
                },
                &mut wire,
            )
            .expect("encode");
        assert_eq!(&wire[..], b"\x00\x00\x00\x05\x01\x00\x00\x02ab");
        wire.clear();
        encoder
            .encode(
                &Frame::RstStream {
                    stream_id: 3,
                    status: rst::CANCEL,
                },
                &mut wire,
            )
            .expect("encode");
        assert_eq!(
            &wire[..],
            b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05"
        );
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        // Wrong version.
        assert_eq!(
            decode_all(b"\x80\x02\x00\x06\x00\x00\x00\x04\0\0\0\x01"),
            Err(FrameError::Version(2))
        );
        // PING of the wrong size, RST_STREAM too short, SETTINGS lying about its count.
        assert!(matches!(
            decode_all(b"\x80\x03\x00\x06\x00\x00\x00\x02\0\0"),
            Err(FrameError::Length { frame: "PING", .. })
        ));
        assert!(matches!(
            decode_all(b"\x80\x03\x00\x03\x00\x00\x00\x04\0\0\0\x01"),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            decode_all(b"\x80\x03\x00\x04\x00\x00\x00\x04\xff\xff\xff\xff"),
            Err(FrameError::Length { .. })
        ));
        // SYN_STREAM shorter than its fixed fields, for stream 0, with garbage headers.
        assert!(matches!(
            decode_all(b"\x80\x03\x00\x01\x00\x00\x00\x02\0\0"),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            decode_all(b"\x80\x03\x00\x01\x00\x00\x00\x0c\0\0\0\x01\0\0\0\0\0\0zz"),
            Err(FrameError::Header(_))
        ));
        // A frame announcing 16 MiB is "need more", not an allocation of it up front.
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x01\x00\xff\xff\xff"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // Unknown control types are skipped.
        assert_eq!(
            decode_all(b"\x80\x03\x00\x0a\x00\x00\x00\x01x"),
            Ok(vec![Frame::Unknown { frame_type: 10 }])
        );
        // Truncated input is "need more".
        assert_eq!(decode_all(b"\x80\x03\x00"), Ok(vec![]));
    }

    #[test]
    fn mutated_and_random_bytes_never_panic() {
        let mut encoder = Encoder::new().expect("encoder");
        let mut wire = BytesMut::new();
        for f in &all_kinds() {
            encoder.encode(f, &mut wire).expect("encode");
        }
        let valid = wire.to_vec();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let mut bytes = valid.clone();
            if round % 3 == 0 {
                let len = (next() % 300) as usize;
                bytes = (0..len).map(|_| next() as u8).collect();
                // Often a control frame header of version 3, to get past the first check.
                if round % 2 == 0 && bytes.len() > 4 {
                    bytes[..4].copy_from_slice(&[0x80, 0x03, 0x00, (next() % 10) as u8]);
                }
            } else {
                for _ in 0..1 + next() % 8 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                bytes.truncate((next() as usize) % (bytes.len() + 1));
            }
            let _ = decode_all(&bytes);
        }
    }

    #[test]
    fn oversized_payloads_are_refused_when_encoding() {
        let mut encoder = Encoder::new().expect("encoder");
        let data = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
        let err = encoder
            .encode(
                &Frame::Data {
                    stream_id: 1,
                    fin: false,
                    data,
                },
                &mut BytesMut::new(),
            )
            .unwrap_err();
        assert_eq!(err, FrameError::TooLarge(MAX_PAYLOAD + 1));
    }
}
