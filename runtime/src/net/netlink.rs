//! The one choke point for rtnetlink: `Netlink` sends one request and waits for its ack;
//! `NetlinkSocket` is the real one, a blocking `NETLINK_ROUTE` socket bound to the network
//! namespace it was opened in. Replies are read raw (type, sequence, errno, ifindex) so a
//! kernel attribute the packet crate does not know can never fail a request.

use std::fmt::Debug;
use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `RTM_NEWLINK`: the reply type of a link `RTM_GETLINK`.
const RTM_NEWLINK: u16 = 16;
/// `RTM_NEWADDR`: one address of an `RTM_GETADDR` dump.
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
const NLM_F_DUMP: u16 = 0x300;
/// `IFA_LOCAL`, `IFA_LABEL`: an address's own address and its interface's label.
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
/// `sizeof(struct ifaddrmsg)`
const IFADDRMSG: usize = 8;
/// `NLMSGERR_ATTR_MSG`: the extended ack's human-readable message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_ACK_TLVS` on an error message: extended ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLM_F_CAPPED` on an error message: the echoed request has no payload.
const NLM_F_CAPPED: u16 = 0x100;
const HDR: usize = 16;

/// Why a request failed.
#[derive(Debug)]
pub struct Nack {
    /// The errno (from the kernel's `nlmsgerr`, or of the socket call that failed).
    pub source: io::Error,
    /// The kernel's extended ack message, if any.
    pub detail: Option<String>,
}

impl Nack {
    /// A refusal with `errno` and no message (for fakes).
    pub fn errno(errno: i32) -> Self {
        Self {
            source: io::Error::from_raw_os_error(errno),
            detail: None,
        }
    }
}

impl From<io::Error> for Nack {
    fn from(source: io::Error) -> Self {
        Self {
            source,
            detail: None,
        }
    }
}

/// Every rtnetlink effect goes through this trait.
pub trait Netlink: Debug + Send {
    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for its ack. Returns
    /// the interface index of an `RTM_NEWLINK` reply, if one came (the answer to a link
    /// `RTM_GETLINK`).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Option<u32>, Nack>;
}

/// A blocking `NETLINK_ROUTE` socket. It stays in the network namespace it was opened in,
/// whatever thread uses it later.
#[derive(Debug)]
pub struct NetlinkSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl NetlinkSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: kernel error strings, and acks without the echoed request.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(1024),
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        self.out.clear();
        self.out.resize(nl.buffer_len(), 0);
        nl.serialize(&mut self.out);
        let n = self.socket.send(&self.out, 0)?;
        if n != self.out.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ));
        }
        Ok(self.seq)
    }
}

impl NetlinkSocket {
    /// Every IPv4 address in the socket's namespace with its interface's label (an
    /// `RTM_GETADDR` dump; the label is the interface name unless an alias label was given,
    /// `eth0:1`).
    pub fn ipv4_addresses(&mut self) -> io::Result<Vec<(String, Ipv4Addr)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = (HDR + IFADDRMSG) as u32;
        self.out.clear();
        self.out.extend_from_slice(&len.to_ne_bytes());
        self.out.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
        self.out
            .extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        self.out.extend_from_slice(&seq.to_ne_bytes());
        self.out.extend_from_slice(&0u32.to_ne_bytes());
        // struct ifaddrmsg: family AF_INET, the rest zero (every interface).
        self.out
            .extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0]);
        self.socket.send(&self.out, 0)?;
        let mut found = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink reply truncated"));
            }
            for m in split(&self.buf) {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    RTM_NEWADDR => found.extend(ipv4_address(m.body)),
                    NLMSG_DONE => return Ok(found),
                    NLMSG_ERROR => {
                        ack(&m).map_err(|nack| nack.source)?;
                        return Ok(found);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The label and local address of one `RTM_NEWADDR` body, if it is IPv4 and has both.
pub(crate) fn ipv4_address(body: &[u8]) -> Option<(String, Ipv4Addr)> {
    if body.len() < IFADDRMSG || i32::from(body[0]) != libc::AF_INET {
        return None;
    }
    let (mut label, mut local) = (None, None);
    let mut tlvs = &body[IFADDRMSG..];
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        let value = &tlvs[4..len];
        match kind {
            IFA_LOCAL if value.len() == 4 => {
                local = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]));
            }
            IFA_LABEL => {
                let name = value.split(|b| *b == 0).next().unwrap_or(value);
                label = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Some((label?, local?))
}

impl Netlink for NetlinkSocket {
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Option<u32>, Nack> {
        let seq = self.send(msg, flags)?;
        let mut index = None;
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink reply truncated").into());
            }
            for m in split(&self.buf) {
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match m.kind {
                    RTM_NEWLINK if m.body.len() >= 8 => {
                        let i = i32::from_ne_bytes(m.body[4..8].try_into().expect("4 bytes"));
                        index = u32::try_from(i).ok();
                    }
                    NLMSG_ERROR => return ack(&m).map(|()| index),
                    NLMSG_DONE => return Ok(index),
                    _ => {}
                }
            }
        }
    }
}

/// One message of a datagram, body after the 16-byte header.
#[derive(Debug, PartialEq)]
pub(crate) struct RawMsg<'a> {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) body: &'a [u8],
}

/// Splits a datagram into messages (stops at the first malformed one).
pub(crate) fn split(buf: &[u8]) -> Vec<RawMsg<'_>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < HDR || off + len > buf.len() {
            break;
        }
        out.push(RawMsg {
            kind: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            flags: u16::from_ne_bytes([buf[off + 6], buf[off + 7]]),
            seq: u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes")),
            body: &buf[off + HDR..off + len],
        });
        off += (len + 3) & !3;
    }
    out
}

/// Reads an `NLMSG_ERROR`: errno 0 is the ack; else the errno and the extack message.
pub(crate) fn ack(m: &RawMsg<'_>) -> Result<(), Nack> {
    let Some(code) = m.body.get(0..4) else {
        return Err(io::Error::other("short netlink error message").into());
    };
    let code = i32::from_ne_bytes(code.try_into().expect("4 bytes"));
    if code == 0 {
        return Ok(());
    }
    let detail = (m.flags & NLM_F_ACK_TLVS != 0)
        .then(|| {
            // After the errno: the request's header (and its payload unless capped).
            let echoed = m.body.get(4..4 + HDR)?;
            let echoed_len = u32::from_ne_bytes(echoed[0..4].try_into().ok()?) as usize;
            let skip = if m.flags & NLM_F_CAPPED != 0 {
                HDR
            } else {
                echoed_len
            };
            extack_msg(m.body.get(4 + ((skip + 3) & !3)..)?)
        })
        .flatten();
    Err(Nack {
        source: io::Error::from_raw_os_error(code.saturating_neg()),
        detail,
    })
}

fn extack_msg(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &tlvs[4..len];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((HDR + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn reads_an_ipv4_address_and_its_label() {
        let mut body = vec![libc::AF_INET as u8, 24, 0, 0, 3, 0, 0, 0];
        body.extend(tlv(1, &[10, 250, 0, 255])); // IFA_ADDRESS (the peer on p2p links)
        body.extend(tlv(IFA_LOCAL, &[10, 250, 0, 11]));
        body.extend(tlv(IFA_LABEL, b"eth0\0"));
        assert_eq!(
            ipv4_address(&body),
            Some(("eth0".to_owned(), Ipv4Addr::new(10, 250, 0, 11)))
        );
        let mut v6 = body.clone();
        v6[0] = libc::AF_INET6 as u8;
        assert_eq!(ipv4_address(&v6), None);
        assert_eq!(ipv4_address(&body[..IFADDRMSG]), None, "no attributes");
    }

    #[test]
    fn splits_a_datagram_and_reads_acks() {
        let mut d = msg(RTM_NEWLINK, 0, 7, &[0, 0, 1, 0, 5, 0, 0, 0]);
        d.extend(msg(NLMSG_ERROR, 0, 7, &0i32.to_ne_bytes()));
        let ms = split(&d);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].seq, 7);
        assert_eq!(ms[1].kind, NLMSG_ERROR);
        assert!(ack(&ms[1]).is_ok());
        // Truncated trailing data is ignored.
        assert_eq!(split(&d[..d.len() - 2]).len(), 1);
    }

    #[test]
    fn reads_errno_and_extack_message() {
        let mut body = (-libc::EEXIST).to_ne_bytes().to_vec();
        body.extend(vec![0u8; HDR]); // echoed header, capped
        let text = b"Nexthop has invalid gateway\0";
        let tlv_len = 4 + text.len();
        body.extend_from_slice(&(tlv_len as u16).to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(text);
        let d = msg(NLMSG_ERROR, NLM_F_ACK_TLVS | NLM_F_CAPPED, 1, &body);
        let nack = ack(&split(&d)[0]).unwrap_err();
        assert_eq!(nack.source.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(nack.detail.as_deref(), Some("Nexthop has invalid gateway"));
    }

    #[test]
    fn error_without_tlvs_has_no_detail() {
        let d = msg(NLMSG_ERROR, 0, 1, &(-libc::ENODEV).to_ne_bytes());
        let nack = ack(&split(&d)[0]).unwrap_err();
        assert_eq!(nack.source.raw_os_error(), Some(libc::ENODEV));
        assert!(nack.detail.is_none());
    }
}
