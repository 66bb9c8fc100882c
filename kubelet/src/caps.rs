//! Linux capability names as Kubernetes writes them (`NET_ADMIN`, or `CAP_NET_ADMIN`), and the
//! set a container keeps: the runtime's defaults, plus `add`, minus `drop` (`ALL` allowed).

use skiff_runtime::container::DEFAULT_CAPABILITIES;

/// Every capability the kernel headers name, by number.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What a capability name in a manifest means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapName {
    All,
    One(u8),
}

/// `NET_ADMIN`, `CAP_NET_ADMIN` or `ALL` (any case, as the container runtimes accept).
pub fn parse(name: &str) -> Option<CapName> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(CapName::All);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|n| CapName::One(n as u8))
}

/// Every capability number.
pub fn all() -> Vec<u8> {
    (0..ALL_CAPABILITIES.len() as u8).collect()
}

/// The defaults changed as containerd does: `add: [ALL]` gives every capability, `drop: [ALL]`
/// none, then the named drops are removed and the named adds added (so the usual
/// `drop: [ALL], add: [NET_BIND_SERVICE]` keeps exactly that one). An unknown name comes back
/// as `Err(name)`.
pub fn effective<'a>(add: &'a [String], drop: &'a [String]) -> Result<Vec<u8>, &'a str> {
    let parse_all = |names: &'a [String]| -> Result<Vec<CapName>, &'a str> {
        names.iter().map(|n| parse(n).ok_or(n.as_str())).collect()
    };
    let (add, drop) = (parse_all(add)?, parse_all(drop)?);
    let mut set: Vec<u8> = DEFAULT_CAPABILITIES.iter().map(|(_, n)| *n).collect();
    if add.contains(&CapName::All) {
        set = all();
    }
    if drop.contains(&CapName::All) {
        set.clear();
    }
    for cap in drop {
        if let CapName::One(n) = cap {
            set.retain(|c| *c != n);
        }
    }
    for cap in add {
        if let CapName::One(n) = cap
            && !set.contains(&n)
        {
            set.push(n);
        }
    }
    set.sort_unstable();
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_match_the_runtime_numbers() {
        for (name, n) in DEFAULT_CAPABILITIES {
            assert_eq!(parse(name), Some(CapName::One(*n)), "{name}");
        }
        assert_eq!(parse("net_admin"), Some(CapName::One(12)));
        assert_eq!(parse("CAP_BPF"), Some(CapName::One(39)));
        assert_eq!(parse("all"), Some(CapName::All));
        assert_eq!(parse("NET_WIZARD"), None);
    }

    #[test]
    fn add_then_drop() {
        let set = effective(&v(&["NET_ADMIN"]), &v(&["CAP_KILL"])).unwrap();
        assert!(set.contains(&12) && !set.contains(&5) && set.contains(&0));
        assert_eq!(
            effective(&v(&["NET_BIND_SERVICE"]), &v(&["ALL"])).unwrap(),
            vec![10]
        );
        assert_eq!(effective(&[], &v(&["ALL"])).unwrap(), Vec::<u8>::new());
        assert_eq!(effective(&v(&["ALL"]), &[]).unwrap(), all());
        assert_eq!(effective(&v(&["BOGUS"]), &[]), Err("BOGUS"));
    }
}
