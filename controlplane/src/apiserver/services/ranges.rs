//! The Service IP range and the NodePort range, and what a Service asks of them — pure:
//! parsing, validation with Kubernetes' messages, candidates to try.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::super::status::Cause;

/// An IPv4 CIDR such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// Parses `a.b.c.d/n` (IPv4, 8 ≤ n ≤ 30); host bits are cleared.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix length {prefix:?} must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    /// The number of addresses, network and broadcast included.
    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// Whether `ip` is an assignable address of the range (not network or broadcast).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset > 0 && offset < self.size() - 1
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + offset)
    }

    /// The first address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Where dynamic allocation starts: the lower band (`min(max(16, size/16), 256)`
    /// addresses) is left for explicit IPs first, as Kubernetes does.
    pub fn dynamic_start(&self) -> u32 {
        (self.size() / 16).clamp(16, 256).min(self.size() / 2)
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The NodePort range, `30000-32767` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Parses `first-last`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not a port range (first-last)"))?;
        let (first, last) = (a.trim().parse::<u16>(), b.trim().parse::<u16>());
        match (first, last) {
            (Ok(first), Ok(last)) if first > 0 && first <= last => Ok(PortRange { first, last }),
            _ => Err(format!("{text:?} is not a port range (first-last)")),
        }
    }

    pub fn contains(&self, port: i64) -> bool {
        port >= i64::from(self.first) && port <= i64::from(self.last)
    }

    pub fn size(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 30000,
            last: 32767,
        }
    }
}

/// What a Service wants for its cluster IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRequest {
    /// `ExternalName`: no IP.
    Nothing,
    /// `clusterIP: None`.
    Headless,
    /// A specific address.
    Explicit(Ipv4Addr),
    /// Any free address.
    Any,
}

/// What a Service asks of the allocators, or why it cannot have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub ip: IpRequest,
    /// `(index in spec.ports, explicit port or None)` of every port that needs a node port.
    pub node_ports: Vec<(usize, Option<u16>)>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether a Service type gets node ports.
pub fn needs_node_ports(svc: &Value) -> bool {
    matches!(text(svc, "/spec/type"), "NodePort" | "LoadBalancer")
}

/// Reads and checks what `svc` (defaulted) asks for; invalid values are causes.
pub fn request(svc: &Value, cidr: &ServiceCidr, ports: &PortRange) -> Result<Request, Vec<Cause>> {
    let mut causes = Vec::new();
    let explicit = match text(svc, "/spec/clusterIP") {
        "" => svc
            .pointer("/spec/clusterIPs/0")
            .and_then(Value::as_str)
            .unwrap_or(""),
        ip => ip,
    };
    let ip = match (text(svc, "/spec/type"), explicit) {
        ("ExternalName", _) => IpRequest::Nothing,
        (_, "") => IpRequest::Any,
        (_, "None") => IpRequest::Headless,
        (_, given) => match given.parse::<Ipv4Addr>() {
            Ok(addr) if cidr.contains(addr) => IpRequest::Explicit(addr),
            Ok(_) => {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.clusterIPs".into(),
                    message: format!(
                        "Invalid value: []string{{\"{given}\"}}: failed to allocate IP {given}: the provided IP ({given}) is not in the valid range. The range of valid IPs is {cidr}"
                    ),
                });
                IpRequest::Any
            }
            Err(_) => {
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: "spec.clusterIPs[0]".into(),
                    message: format!(
                        "Invalid value: \"{given}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                    ),
                });
                IpRequest::Any
            }
        },
    };
    let mut node_ports = Vec::new();
    let list = svc.pointer("/spec/ports").and_then(Value::as_array);
    for (i, port) in list.into_iter().flatten().enumerate() {
        let given = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if given != 0 && !ports.contains(given) {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                field: format!("spec.ports[{i}].nodePort"),
                message: format!(
                    "Invalid value: {given}: provided port is not in the valid range. The range of valid ports is {}-{}",
                    ports.first, ports.last
                ),
            });
            continue;
        }
        if given != 0 && !needs_node_ports(svc) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: format!("spec.ports[{i}].nodePort"),
                message: "Forbidden: may not be used when `type` is 'ClusterIP'".into(),
            });
            continue;
        }
        if needs_node_ports(svc) {
            node_ports.push((i, u16::try_from(given).ok().filter(|p| *p != 0)));
        }
    }
    if causes.is_empty() {
        Ok(Request { ip, node_ports })
    } else {
        Err(causes)
    }
}

/// On an update through the main resource: keeps the allocated cluster IP when the new
/// object leaves it out, refuses a change, and keeps each port's node port when the port
/// (number and protocol) is still there and still needs one.
pub fn keep_allocated(old: &Value, new: &mut Value) -> Result<(), Cause> {
    let old_ip = text(old, "/spec/clusterIP").to_owned();
    let new_ip = text(new, "/spec/clusterIP").to_owned();
    if !old_ip.is_empty() && text(new, "/spec/type") != "ExternalName" {
        if new_ip.is_empty() {
            new["spec"]["clusterIP"] = Value::String(old_ip.clone());
            if let Some(ips) = old.pointer("/spec/clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        } else if new_ip != old_ip {
            return Err(Cause {
                reason: "FieldValueInvalid",
                field: "spec.clusterIPs[0]".into(),
                message: format!(
                    "Invalid value: []string{{\"{new_ip}\"}}: may not change once set"
                ),
            });
        }
    }
    let keep = needs_node_ports(new);
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports {
            let unset = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0;
            if !keep {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
                continue;
            }
            let same = |o: &&Value| {
                o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol")
            };
            let previous = old_ports.iter().flatten().find(same);
            if let (true, Some(n)) = (unset, previous.and_then(|o| o.get("nodePort"))) {
                port["nodePort"] = n.clone();
            }
        }
    }
    Ok(())
}

/// The node ports a Service holds.
pub fn node_ports_of(svc: &Value) -> Vec<u16> {
    let list = svc.pointer("/spec/ports").and_then(Value::as_array);
    let mut out: Vec<u16> = list
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The cluster IPs a Service holds.
pub fn ips_of(svc: &Value) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(std::iter::once(text(svc, "/spec/clusterIP")))
        .filter_map(|s| s.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cidr() -> ServiceCidr {
        ServiceCidr::parse("10.96.0.0/12").unwrap()
    }

    #[test]
    fn cidr_parsing_and_membership() {
        let c = cidr();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(c.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!c.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(c.dynamic_start(), 256);
        assert_eq!(
            ServiceCidr::parse("10.0.0.7/24").unwrap().to_string(),
            "10.0.0.0/24"
        );
        assert_eq!(
            ServiceCidr::parse("10.0.0.0/29").unwrap().dynamic_start(),
            4
        );
        for bad in ["10.0.0.0", "x/12", "10.0.0.0/31", "10.0.0.0/4"] {
            assert!(ServiceCidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PortRange::parse("30000-32767").unwrap(),
            PortRange::default()
        );
        assert!(PortRange::parse("5-1").is_err());
    }

    #[test]
    fn requests_with_kubernetes_messages() {
        let (c, p) = (cidr(), PortRange::default());
        let svc = |spec: Value| json!({"spec": spec});
        let r = request(&svc(json!({"type": "ClusterIP"})), &c, &p).unwrap();
        assert_eq!(r.ip, IpRequest::Any);
        let r = request(&svc(json!({"clusterIP": "None"})), &c, &p).unwrap();
        assert_eq!(r.ip, IpRequest::Headless);
        let r = request(&svc(json!({"type": "ExternalName"})), &c, &p).unwrap();
        assert_eq!(r.ip, IpRequest::Nothing);
        let r = request(
            &svc(json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                "ports": [{"port": 80}, {"port": 81, "nodePort": 30080}]})),
            &c,
            &p,
        )
        .unwrap();
        assert_eq!(r.ip, IpRequest::Explicit(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(r.node_ports, vec![(0, None), (1, Some(30080))]);

        let err = request(&svc(json!({"clusterIP": "10.0.0.1"})), &c, &p).unwrap_err();
        assert_eq!(err[0].field, "spec.clusterIPs");
        assert!(
            err[0]
                .message
                .ends_with("The range of valid IPs is 10.96.0.0/12")
        );
        let err = request(&svc(json!({"clusterIP": "abc"})), &c, &p).unwrap_err();
        assert!(err[0].message.contains("must be a valid IP address"));
        let err = request(
            &svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})),
            &c,
            &p,
        )
        .unwrap_err();
        assert_eq!(
            err[0].message,
            "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        let err = request(
            &svc(json!({"ports": [{"port": 80, "nodePort": 30001}]})),
            &c,
            &p,
        )
        .unwrap_err();
        assert_eq!(err[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn updates_keep_what_was_allocated() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        keep_allocated(&old, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none());
        let mut to_cluster_ip = json!({"spec": {"type": "ClusterIP",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        keep_allocated(&old, &mut to_cluster_ip).unwrap();
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        let mut changed = json!({"spec": {"clusterIP": "10.96.0.10"}});
        let err = keep_allocated(&old, &mut changed).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid value: []string{\"10.96.0.10\"}: may not change once set"
        );
        assert_eq!(node_ports_of(&old), vec![30080]);
        assert_eq!(ips_of(&old), vec![Ipv4Addr::new(10, 96, 0, 9)]);
    }
}
