//! Cluster DNS, answered on every node by its proxy (as NodeLocal DNSCache does): the
//! records are rebuilt in memory from each [`ClusterState`](crate::ClusterState)
//! (`records.rs`), a query is answered from them (`answer.rs`, pure) or relayed to the
//! node's upstream resolver (`forward.rs`), over UDP and TCP (`server.rs`). Where it
//! listens — the cluster DNS address on a dummy interface of the node — is
//! `crate::nodelocal`'s job; see docs/design/011-node-local-dns.md.

mod answer;
mod forward;
mod records;
mod server;

pub use answer::{Outcome, TTL, answer};
pub use forward::{ForwardError, Transport, upstreams_from_resolv_conf};
pub use records::{Entry, Lookup, Records, Srv};
pub use server::{DnsError, DnsServer};

use std::sync::Arc;

use crate::feed::{Consumer, SyncError};
use crate::state::ClusterState;

/// The DNS side of the proxy's sync loop: each new state becomes the server's records.
pub struct DnsRecords {
    domain: String,
    records: tokio::sync::watch::Sender<Arc<Records>>,
}

impl DnsRecords {
    /// Feeds `server` with the records of the cluster domain `domain`.
    pub fn new(server: &DnsServer, domain: impl Into<String>) -> DnsRecords {
        DnsRecords {
            domain: domain.into(),
            records: server.records_handle(),
        }
    }
}

impl Consumer for DnsRecords {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn sync(&mut self, state: &ClusterState) -> Result<(), SyncError> {
        let records = Records::build(state, &self.domain);
        tracing::debug!(names = records.len(), "DNS records rebuilt");
        self.records.send_replace(Arc::new(records));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
