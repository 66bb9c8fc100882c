//! Bodies built with a small encoder, shaped as kubectl 1.33 sends them.

use serde_json::json;

use super::*;

/// A protobuf encoder just big enough for the tests.
#[derive(Default, Clone)]
struct Enc(Vec<u8>);

impl Enc {
    fn varint(mut self, mut v: u64) -> Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return self;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn int(self, tag: u32, v: i64) -> Self {
        self.varint(u64::from(tag) << 3).varint(v as u64)
    }
    fn bytes(self, tag: u32, b: &[u8]) -> Self {
        let mut e = self
            .varint((u64::from(tag) << 3) | 2)
            .varint(b.len() as u64);
        e.0.extend_from_slice(b);
        e
    }
    fn str(self, tag: u32, s: &str) -> Self {
        self.bytes(tag, s.as_bytes())
    }
    fn msg(self, tag: u32, m: Enc) -> Self {
        self.bytes(tag, &m.0)
    }
    fn entry(self, tag: u32, k: &str, v: Enc) -> Self {
        self.msg(tag, Enc::default().str(1, k).msg(2, v))
    }
    fn map_str(self, tag: u32, k: &str, v: &str) -> Self {
        self.msg(tag, Enc::default().str(1, k).str(2, v))
    }
}

fn envelope(api_version: &str, kind: &str, raw: Enc) -> Vec<u8> {
    let type_meta = Enc::default().str(1, api_version).str(2, kind);
    let unknown = Enc::default()
        .msg(1, type_meta)
        .msg(2, raw)
        .str(3, "")
        .str(4, "");
    [MAGIC, &unknown.0].concat()
}

/// ObjectMeta as Go writes it: every non-pointer string present, even empty, and an empty
/// creationTimestamp.
fn meta(name: &str) -> Enc {
    Enc::default()
        .str(1, name)
        .str(2, "")
        .str(3, "")
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, Enc::default())
        .map_str(11, "app", name)
}

#[test]
fn deployment_from_kubectl_create() {
    let container = Enc::default()
        .str(1, "nginx")
        .str(2, "nginx:1.27")
        .msg(8, Enc::default())
        .str(13, "")
        .int(16, 0)
        .int(17, 0)
        .int(18, 0);
    let pod_spec = Enc::default().msg(2, container).str(10, "").int(11, 0);
    let template = Enc::default().msg(
        1,
        Enc::default()
            .msg(8, Enc::default())
            .map_str(11, "app", "web"),
    );
    let template = template.msg(2, pod_spec);
    let selector = Enc::default().map_str(1, "app", "web");
    let spec = Enc::default()
        .int(1, 0)
        .msg(2, selector)
        .msg(3, template)
        .msg(4, Enc::default())
        .int(5, 0)
        .int(7, 0);
    let body = envelope(
        "apps/v1",
        "Deployment",
        Enc::default()
            .msg(1, meta("web"))
            .msg(2, spec)
            .msg(3, Enc::default()),
    );
    let v = decode(&body).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                // replicas is a pointer in Go: an explicit 0 is kept.
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "resources": {}}]},
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn secrets_configmaps_services_and_special_types() {
    let secret = envelope(
        "v1",
        "Secret",
        Enc::default()
            .msg(1, meta("db"))
            .entry(2, "user", Enc(b"admin".to_vec()))
            .str(3, "Opaque"),
    );
    // A map<string, bytes> value is the entry's field 2 as bytes.
    let v = decode(&secret).unwrap();
    assert_eq!(v["data"], json!({"user": "YWRtaW4="}));
    assert_eq!(v["type"], "Opaque");

    let cm = envelope(
        "v1",
        "ConfigMap",
        Enc::default()
            .msg(1, meta("cfg").msg(8, Enc::default().int(1, 1_700_000_000)))
            .map_str(2, "a", "1"),
    );
    let v = decode(&cm).unwrap();
    assert_eq!(v["data"], json!({"a": "1"}));
    assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");

    let port = Enc::default()
        .str(1, "http")
        .str(2, "TCP")
        .int(3, 80)
        .msg(4, Enc::default().int(1, 1).str(3, "web"))
        .int(5, 0);
    let zero_target = Enc::default()
        .int(3, 443)
        .msg(4, Enc::default().int(1, 0).int(2, 0));
    let spec = Enc::default()
        .msg(1, port)
        .msg(1, zero_target)
        .str(6, "")
        .str(4, "ClusterIP");
    let svc = envelope(
        "v1",
        "Service",
        Enc::default().msg(1, meta("web")).msg(2, spec),
    );
    let v = decode(&svc).unwrap();
    assert_eq!(
        v["spec"],
        json!({"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
                          {"port": 443}], "type": "ClusterIP"})
    );

    // Quantity, negative int32, a packed repeated int64 and an inlined embedded struct.
    let resources = Enc::default().entry(1, "cpu", Enc::default().str(1, "500m"));
    let sc = Enc::default().int(4, 0).msg(1, Enc::default());
    let probe = Enc::default()
        .msg(1, Enc::default().msg(1, Enc::default().str(1, "true")))
        .int(2, -5);
    let container = Enc::default()
        .str(1, "c")
        .msg(8, resources)
        .msg(15, sc)
        .msg(10, probe);
    let pod_sc = Enc::default().bytes(4, &[1, 2, 3]);
    let pod_spec = Enc::default().msg(2, container).msg(14, pod_sc);
    let pod = envelope(
        "v1",
        "Pod",
        Enc::default().msg(1, meta("p")).msg(2, pod_spec),
    );
    let v = decode(&pod).unwrap();
    let c = &v["spec"]["containers"][0];
    assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
    assert_eq!(
        c["securityContext"],
        json!({"runAsUser": 0, "capabilities": {}})
    );
    assert_eq!(
        c["livenessProbe"],
        json!({"exec": {"command": ["true"]}, "initialDelaySeconds": -5})
    );
    assert_eq!(
        v["spec"]["securityContext"]["supplementalGroups"],
        json!([1, 2, 3])
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode(b"").is_err());
    assert!(decode(b"{}").is_err());
    assert!(decode(b"k8s\0\xff\xff\xff").is_err());
    let unknown_kind = envelope("v1", "Widget", Enc::default());
    assert!(
        decode(&unknown_kind)
            .unwrap_err()
            .to_string()
            .contains("Widget")
    );
    // A string field whose length runs past the end of the message.
    let truncated = envelope("v1", "ConfigMap", Enc::default().varint(10).varint(50));
    let err = decode(&truncated).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    // Invalid UTF-8 in a name.
    let bad = envelope(
        "v1",
        "ConfigMap",
        Enc::default().msg(1, Enc::default().bytes(1, &[0xff, 0xfe])),
    );
    let err = decode(&bad).unwrap_err().to_string();
    assert!(err.contains("ConfigMap.metadata"), "{err}");
    // Every prefix of a valid body fails or decodes; none panics.
    let cm = envelope(
        "v1",
        "ConfigMap",
        Enc::default().msg(1, meta("x")).map_str(2, "k", "v"),
    );
    for n in 0..cm.len() {
        let _ = decode(&cm[..n]);
    }
}
