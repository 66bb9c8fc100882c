//! SPDY/3.1 as Kubernetes streams use it (kubectl's side is moby/spdystream): the frame
//! codec (`frame.rs`), header blocks compressed with the SPDY dictionary (`headers.rs`,
//! `dictionary.rs`), and a server-side connection that answers streams as they open
//! (`connection.rs`). See docs/design/015-streams.md.

mod connection;
mod dictionary;
mod frame;
mod headers;

pub use connection::{Connection, Event, Handle};
pub use frame::{decode_all, rst};
pub use headers::{HeaderInflater, Headers};
