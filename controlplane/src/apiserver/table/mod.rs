//! Server-side printing: `meta.k8s.io/v1` `Table` responses, the form every human-readable
//! `kubectl get` asks for. Per-kind columns live in `printers.rs`.

mod printers;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

pub use printers::{
    CONFIGMAPS, DEPLOYMENTS, ENDPOINTS, ENDPOINTSLICES, EVENTS, LEASES, NAMESPACES, NODES, PODS,
    REPLICASETS, SECRETS, SERVICEACCOUNTS, SERVICES, STATEFULSETS,
};

/// A column of a Table; `priority` 1 columns show only with `-o wide`.
#[derive(Debug)]
pub struct Column {
    /// Header text (kubectl upper-cases it).
    pub name: &'static str,
    /// `string`, `integer`, `date`….
    pub kind: &'static str,
    /// `name` for the NAME column, else empty.
    pub format: &'static str,
    /// Priority: 0 always shown, 1 with `-o wide`.
    pub priority: u8,
}

/// How one resource prints: its columns and the cells of one object.
#[derive(Debug)]
pub struct Printer {
    /// The columns, in order.
    pub columns: &'static [Column],
    /// The cells of one object, one per column; `now` is for AGE cells.
    pub cells: fn(&Value, Timestamp) -> Vec<Value>,
}

/// The `columnDefinitions` of a printer.
pub fn column_definitions(printer: &Printer) -> Vec<Value> {
    printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.name,
                "priority": c.priority,
            })
        })
        .collect()
}

/// The `PartialObjectMetadata` carried by each row (kubectl reads namespace and labels).
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table of `objects`; `with_columns` false leaves `columnDefinitions` out (watch events
/// after the first).
pub fn table(
    printer: &Printer,
    objects: &[Value],
    list_meta: Map<String, Value>,
    now: Timestamp,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": (printer.cells)(o, now), "object": partial_metadata(o)}))
        .collect();
    let columns = if with_columns {
        column_definitions(printer)
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Kubernetes' `duration.HumanDuration` (what the AGE column shows).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        return match s % 60 {
            0 => format!("{minutes}m"),
            rem => format!("{minutes}m{rem}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rem => format!("{hours}h{rem}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            rem => format!("{}d{rem}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        return match days % 365 {
            0 => format!("{}y", days / 365),
            rem => format!("{}y{rem}d", days / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 timestamp at `now`, as AGE shows it; `<unknown>` if unset.
pub fn age(timestamp: Option<&str>, now: Timestamp) -> String {
    match timestamp.and_then(|t| t.parse::<Timestamp>().ok()) {
        Some(t) => human_duration(now.duration_since(t).as_secs()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubernetes() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn table_rows_carry_partial_metadata() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let cm = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
            "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"k": "v"}});
        let t = table(&CONFIGMAPS, &[cm], Map::new(), now, true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["rows"][0]["cells"], json!(["a", 1, "10m"]));
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["x"], "y");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
    }
}
