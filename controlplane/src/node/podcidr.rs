//! Pod address ranges for nodes: the cluster CIDR (10.244.0.0/16) cut into one block per
//! node (/24), handed out lowest first and kept in the Node's `spec.podCIDR`, so the Node
//! objects themselves are the allocation record.

use ipnet::Ipv4Net;

/// Cuts `cluster` into blocks of `/node_prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrs {
    cluster: Ipv4Net,
    node_prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    #[error("node prefix /{node} must be within the cluster CIDR {cluster} (prefix {cluster_prefix}..=30)", cluster_prefix = cluster.prefix_len())]
    Prefix { cluster: Ipv4Net, node: u8 },
    #[error("every /{prefix} of the cluster CIDR {cluster} is in use")]
    Exhausted { cluster: Ipv4Net, prefix: u8 },
}

impl PodCidrs {
    pub fn new(cluster: Ipv4Net, node_prefix: u8) -> Result<PodCidrs, PodCidrError> {
        if node_prefix < cluster.prefix_len() || node_prefix > 30 {
            return Err(PodCidrError::Prefix {
                cluster,
                node: node_prefix,
            });
        }
        Ok(PodCidrs {
            cluster: cluster.trunc(),
            node_prefix,
        })
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// The lowest block that is not in `used` (text CIDRs from Node objects; ones that do
    /// not parse or lie outside the cluster CIDR are ignored).
    pub fn next_free<'a>(
        &self,
        used: impl IntoIterator<Item = &'a str>,
    ) -> Result<Ipv4Net, PodCidrError> {
        let taken: std::collections::HashSet<Ipv4Net> = used
            .into_iter()
            .filter_map(|c| c.parse::<Ipv4Net>().ok())
            .map(|c| c.trunc())
            .collect();
        let exhausted = PodCidrError::Exhausted {
            cluster: self.cluster,
            prefix: self.node_prefix,
        };
        let mut blocks = self
            .cluster
            .subnets(self.node_prefix)
            .map_err(|_| exhausted.clone())?;
        blocks.find(|b| !taken.contains(b)).ok_or(exhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(cluster: &str, prefix: u8) -> PodCidrs {
        PodCidrs::new(cluster.parse().unwrap(), prefix).unwrap()
    }

    #[test]
    fn hands_out_the_lowest_free_block() {
        let c = cidrs("10.244.0.0/16", 24);
        assert_eq!(c.next_free([]).unwrap().to_string(), "10.244.0.0/24");
        let used = [
            "10.244.0.0/24",
            "10.244.2.0/24",
            "garbage",
            "192.168.0.0/24",
        ];
        assert_eq!(c.next_free(used).unwrap().to_string(), "10.244.1.0/24");
    }

    #[test]
    fn exhaustion_and_bad_prefixes_are_errors() {
        let c = cidrs("10.244.0.0/23", 24);
        let err = c.next_free(["10.244.0.0/24", "10.244.1.0/24"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "every /24 of the cluster CIDR 10.244.0.0/23 is in use"
        );
        assert!(PodCidrs::new("10.244.0.0/16".parse().unwrap(), 8).is_err());
        assert!(PodCidrs::new("10.244.0.0/16".parse().unwrap(), 31).is_err());
    }
}
