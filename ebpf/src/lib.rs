//! skiff's BPF programs (compiled from `bpf/skiff_lb.c` by build.rs and embedded as
//! [`OBJECT`]) and their map layout: every key and value struct of `bpf/skiff_lb.h`, mirrored
//! here as a `#[repr(C)]` type. `tests/layout.rs` checks each against the object's BTF.
//!
//! Types only, no I/O. Addresses and ports are in network byte order, as the kernel gives
//! them to the programs; [`be_addr`], [`be_port`] and their inverses convert.
//!
//! With the `aya` feature the types implement `aya::Pod`, so they can be map keys and values.
#![cfg_attr(not(test), no_std)]

use core::net::Ipv4Addr;

/// The compiled BPF object (ELF), 8-byte aligned as ELF parsers expect.
pub static OBJECT: &[u8] = &ALIGNED.0;

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/skiff_lb.o")));

/// The maps of the object, by name (also their pin names in bpffs).
pub mod maps {
    pub const FRONTENDS: &str = "skiff_frontends";
    pub const BACKENDS: &str = "skiff_backends";
    pub const AFFINITY: &str = "skiff_affinity";
    pub const SOCKETS: &str = "skiff_sockets";
    pub const CONNTRACK: &str = "skiff_conntrack";
    pub const CONFIG: &str = "skiff_config";
    pub const ALL: [&str; 6] = [FRONTENDS, BACKENDS, AFFINITY, SOCKETS, CONNTRACK, CONFIG];
}

/// The programs of the object, by name.
pub mod programs {
    pub const CONNECT4: &str = "skiff_connect4";
    pub const SENDMSG4: &str = "skiff_sendmsg4";
    pub const RECVMSG4: &str = "skiff_recvmsg4";
    pub const GETPEERNAME4: &str = "skiff_getpeer4";
    pub const TC_INGRESS: &str = "skiff_ingress";
    pub const TC_EGRESS: &str = "skiff_egress";
    pub const ALL: [&str; 6] = [
        CONNECT4,
        SENDMSG4,
        RECVMSG4,
        GETPEERNAME4,
        TC_INGRESS,
        TC_EGRESS,
    ];
}

pub const MAX_FRONTENDS: u32 = 262_144;
pub const MAX_BACKEND_CHUNKS: u32 = 131_072;
/// Backends per backend map entry (`SKIFF_CHUNK`).
pub const CHUNK: usize = 16;

/// `frontend_value.flags`
pub const FE_EXTERNAL: u16 = 0x1;
pub const FE_ETP_LOCAL: u16 = 0x2;
pub const FE_ITP_LOCAL: u16 = 0x4;
pub const FE_AFFINITY: u16 = 0x8;
pub const FE_NODEPORT: u16 = 0x10;
/// `backend_value.flags`
pub const BE_LOCAL: u8 = 0x1;
/// `ct_value.flags`
pub const CT_SNAT: u8 = 0x1;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// An address as the maps hold it (network byte order in a native u32).
pub fn be_addr(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The address a map's u32 holds.
pub fn addr_of(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

/// A port as the maps hold it (network byte order).
pub fn be_port(port: u16) -> u16 {
    port.to_be()
}

/// The port a map's u16 holds.
pub fn port_of(raw: u16) -> u16 {
    u16::from_be(raw)
}

/// `struct frontend_key`: a Service address as a client dials it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FrontendKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct frontend_value`: the Service port's backend sets and behaviour.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrontendValue {
    pub svc_id: u32,
    pub set_id: u32,
    pub local_set_id: u32,
    pub count: u16,
    pub local_count: u16,
    pub flags: u16,
    pub pad: u16,
    pub affinity_timeout: u32,
}

/// `struct backend_key`: one chunk of a backend set (backends
/// `chunk * CHUNK .. (chunk + 1) * CHUNK`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendKey {
    pub set_id: u32,
    pub chunk: u32,
}

/// `struct backend_chunk`: [`CHUNK`] backends; slots past the set's count are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendChunk {
    pub slot: [BackendValue; CHUNK],
}

/// `struct backend_value`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendValue {
    pub addr: u32,
    pub port: u16,
    pub flags: u8,
    pub pad: u8,
}

/// `struct affinity_key`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffinityKey {
    pub client: u64,
    pub svc_id: u32,
    pub pad: u32,
}

/// `struct affinity_value`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AffinityValue {
    pub last_ns: u64,
    pub set_id: u32,
    pub index: u32,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct sock_key`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct sock_value`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockValue {
    pub addr: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct ct_key`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// `struct ct_value`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtValue {
    pub last_ns: u64,
    pub addr: u32,
    pub addr2: u32,
    pub port: u16,
    pub port2: u16,
    pub flags: u8,
    pub pad: [u8; 3],
}

/// `struct lb_config` (the one entry of `skiff_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbConfig {
    pub node_addr: u32,
    /// Host byte order.
    pub snat_port_min: u16,
    /// Host byte order.
    pub snat_port_max: u16,
}

/// One mirrored struct: its C name, size and `(field, offset)` list, for the layout test.
#[derive(Debug)]
pub struct Layout {
    pub name: &'static str,
    pub size: usize,
    pub fields: &'static [(&'static str, usize)],
}

macro_rules! layouts {
    ($($ty:ident = $c:literal { $($field:ident),* $(,)? }),* $(,)?) => {
        /// Every mirrored struct's layout as Rust sees it.
        pub const LAYOUTS: &[Layout] = &[$(Layout {
            name: $c,
            size: core::mem::size_of::<$ty>(),
            fields: &[$((stringify!($field), core::mem::offset_of!($ty, $field))),*],
        }),*];
        #[cfg(feature = "aya")]
        mod pod {
            use super::*;
            $(
                // SAFETY: a #[repr(C)] struct of integers with explicit padding fields: every
                // bit pattern is valid and it has no implicit padding (tests/layout.rs checks
                // the sizes against the BPF object's BTF).
                unsafe impl aya::Pod for $ty {}
            )*
        }
    };
}

layouts! {
    FrontendKey = "frontend_key" { addr, port, proto, pad },
    FrontendValue = "frontend_value" {
        svc_id, set_id, local_set_id, count, local_count, flags, pad, affinity_timeout
    },
    BackendKey = "backend_key" { set_id, chunk },
    BackendChunk = "backend_chunk" { slot },
    BackendValue = "backend_value" { addr, port, flags, pad },
    AffinityKey = "affinity_key" { client, svc_id, pad },
    AffinityValue = "affinity_value" { last_ns, set_id, index, addr, port, pad },
    SockKey = "sock_key" { cookie, addr, port, pad },
    SockValue = "sock_value" { addr, port, pad },
    CtKey = "ct_key" { saddr, daddr, sport, dport, proto, dir, pad },
    CtValue = "ct_value" { last_ns, addr, addr2, port, port2, flags, pad },
    LbConfig = "lb_config" { node_addr, snat_port_min, snat_port_max },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_helpers_round_trip() {
        let addr = Ipv4Addr::new(10, 96, 0, 10);
        assert_eq!(be_addr(addr).to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(addr_of(be_addr(addr)), addr);
        assert_eq!(be_port(80).to_ne_bytes(), [0, 80]);
        assert_eq!(port_of(be_port(30080)), 30080);
    }

    #[test]
    fn the_object_is_an_aligned_bpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(OBJECT.as_ptr() as usize % 8, 0);
        // e_machine EM_BPF (247), little endian.
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
    }
}
