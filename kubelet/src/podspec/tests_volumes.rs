//! Volumes from a control plane as plans: which files each holds with which modes, on which
//! medium, mounted how; and bad items named by field.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::ByteString;

use super::tests::{Images, ctx};
use super::tests_env::FakeObjects;
use super::*;

fn objects() -> FakeObjects {
    let mut objects = FakeObjects::default()
        .with_config_map(
            "default",
            "app",
            &[("app.conf", "port=80\n"), ("motd", "hi")],
        )
        .with_secret(
            "default",
            "tls",
            &[("tls.key", b"KEY"), ("tls.crt", b"CRT")],
        );
    let cm = objects.config_maps.get_mut("default/app").unwrap();
    cm.binary_data = Some([("logo.png".to_string(), ByteString(vec![0x89, b'P']))].into());
    objects
}

/// A pod with these volumes and one container mounting each at `/v/NAME`.
fn pod_with(volumes: &str, names: &[&str]) -> String {
    let mounts: String = names
        .iter()
        .map(|n| format!("    - {{name: {n}, mountPath: /v/{n}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  uid: u-1\n  labels: {{b: \"2\", a: \"x\\\"y\"}}\n\
         spec:\n  volumes:\n{volumes}  containers:\n  - name: c\n    image: busybox\n    \
         resources: {{limits: {{memory: 64Mi}}}}\n    volumeMounts:\n{mounts}"
    )
}

fn plan_with(yaml: &str, objects: Option<&dyn ObjectSource>) -> Result<PodPlan, PodSpecError> {
    plan(
        &parse(yaml)?,
        &ctx(Some(Ipv4Addr::new(10, 88, 0, 2))),
        &Images,
        objects,
    )
}

/// `path mode bytes` of a volume's files.
fn files(v: &VolumePlan) -> Vec<(String, u32, Vec<u8>)> {
    let payload = v.contents.as_ref().expect("a volume with files");
    payload
        .iter()
        .map(|(k, f)| (k.clone(), f.mode, f.data.clone()))
        .collect()
}

fn f(path: &str, mode: u32, data: &[u8]) -> (String, u32, Vec<u8>) {
    (path.into(), mode, data.to_vec())
}

#[test]
fn config_map_and_secret_volumes_hold_their_keys() {
    let yaml = pod_with(
        "  - {name: all, configMap: {name: app}}\n  \
         - name: some\n    configMap:\n      name: app\n      defaultMode: 0o600\n      items:\n      \
         - {key: motd, path: etc/motd}\n      - {key: logo.png, path: logo, mode: 0o444}\n  \
         - {name: opt, configMap: {name: nothing, optional: true}}\n  \
         - {name: tls, secret: {secretName: tls}}\n  \
         - {name: tls2, secret: {secretName: tls, defaultMode: 0o440, items: [{key: tls.key, path: k}]}}\n",
        &["all", "some", "opt", "tls", "tls2"],
    );
    let objects = objects();
    let plan = plan_with(&yaml, Some(&objects)).unwrap();
    let [all, some, opt, tls, tls2] = plan.volumes.as_slice() else {
        panic!("{:?}", plan.volumes)
    };
    assert_eq!(all.dir, PathBuf::from("/run/pods/p/volumes/all"));
    assert_eq!(all.medium, Medium::Disk);
    assert_eq!(
        files(all),
        [
            f("app.conf", 0o644, b"port=80\n"),
            f("logo.png", 0o644, &[0x89, b'P']),
            f("motd", 0o644, b"hi"),
        ]
    );
    assert_eq!(
        files(some),
        [f("etc/motd", 0o600, b"hi"), f("logo", 0o444, &[0x89, b'P'])]
    );
    assert!(files(opt).is_empty(), "optional and missing: empty");
    assert_eq!(tls.medium, Medium::Memory { size_bytes: None });
    assert_eq!(
        files(tls),
        [f("tls.crt", 0o400, b"CRT"), f("tls.key", 0o400, b"KEY")]
    );
    assert_eq!(files(tls2), [f("k", 0o440, b"KEY")]);
    assert!(plan.dirs.is_empty(), "no emptyDir");
    let mounts = &plan.containers[0].spec.mounts;
    for (m, name) in mounts.iter().zip(["all", "some", "opt", "tls", "tls2"]) {
        assert_eq!(
            m.source,
            PathBuf::from(format!("/run/pods/p/volumes/{name}"))
        );
        assert!(
            m.readonly,
            "{name}: read-only in containers, as in Kubernetes"
        );
    }
    assert!(
        !format!("{tls:?}").contains("KEY") && !format!("{tls:?}").contains("75, 69, 89"),
        "a plan's Debug shows no secret bytes: {tls:?}"
    );
}

#[test]
fn downward_api_and_projected_volumes() {
    let yaml = pod_with(
        "  - name: info\n    downwardAPI:\n      items:\n      - {path: labels, fieldRef: {fieldPath: metadata.labels}}\n      \
         - {path: meta/name, fieldRef: {fieldPath: metadata.name}, mode: 0o400}\n      \
         - {path: mem, resourceFieldRef: {containerName: c, resource: limits.memory, divisor: 1Mi}}\n  \
         - name: all-in-one\n    projected:\n      sources:\n      - configMap: {name: app, items: [{key: motd, path: motd}]}\n      \
         - secret: {name: tls, items: [{key: tls.crt, path: certs/tls.crt}]}\n      \
         - downwardAPI: {items: [{path: uid, fieldRef: {fieldPath: metadata.uid}}]}\n  \
         - name: plain\n    projected:\n      defaultMode: 0o444\n      sources:\n      - configMap: {name: app, items: [{key: motd, path: m}]}\n",
        &["info", "all-in-one", "plain"],
    );
    let objects = objects();
    let plan = plan_with(&yaml, Some(&objects)).unwrap();
    let [info, projected, plain] = plan.volumes.as_slice() else {
        panic!("{:?}", plan.volumes)
    };
    assert_eq!(info.medium, Medium::Disk);
    assert_eq!(
        files(info),
        [
            f("labels", 0o644, b"a=\"x\\\"y\"\nb=\"2\""),
            f("mem", 0o644, b"64"),
            f("meta/name", 0o400, b"p"),
        ]
    );
    assert_eq!(
        projected.medium,
        Medium::Memory { size_bytes: None },
        "holds a Secret: on tmpfs"
    );
    assert_eq!(
        files(projected),
        [
            f("certs/tls.crt", 0o400, b"CRT"),
            f("motd", 0o644, b"hi"),
            f("uid", 0o644, b"u-1"),
        ]
    );
    assert_eq!(plain.medium, Medium::Disk);
    assert_eq!(files(plain), [f("m", 0o444, b"hi")]);
}

#[test]
fn memory_empty_dirs_and_fs_group() {
    let yaml = pod_with(
        "  - {name: scratch, emptyDir: {}}\n  - {name: fast, emptyDir: {medium: Memory, sizeLimit: 64Mi}}\n  \
         - {name: tmp, emptyDir: {medium: Memory}}\n",
        &["scratch", "fast", "tmp"],
    );
    let plan = plan_with(&yaml, None).unwrap();
    let media: Vec<_> = plan
        .volumes
        .iter()
        .map(|v| (v.medium, v.contents.is_none()))
        .collect();
    assert_eq!(
        media,
        [
            (Medium::Disk, true),
            (
                Medium::Memory {
                    size_bytes: Some(64 << 20)
                },
                true
            ),
            (Medium::Memory { size_bytes: None }, true),
        ]
    );
    assert_eq!(plan.dirs, [PathBuf::from("/run/pods/p/volumes/scratch")]);
    assert!(
        plan.containers[0]
            .spec
            .mounts
            .iter()
            .take(3)
            .all(|m| !m.readonly)
    );

    let yaml = pod_with("  - {name: tls, secret: {secretName: tls}}\n", &["tls"])
        .replace("spec:\n", "spec:\n  securityContext: {fsGroup: 2000}\n");
    let objects = objects();
    let plan = plan_with(&yaml, Some(&objects)).unwrap();
    assert_eq!(plan.volumes[0].gid, Some(2000));
    assert_eq!(
        files(&plan.volumes[0]),
        [f("tls.crt", 0o440, b"CRT"), f("tls.key", 0o440, b"KEY")],
        "fsGroup: group-readable, as Kubernetes makes them"
    );
}

#[test]
fn without_a_control_plane_only_objects_are_refused() {
    let yaml = pod_with(
        "  - name: info\n    downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}\n",
        &["info"],
    );
    let plan = plan_with(&yaml, None).unwrap();
    assert_eq!(files(&plan.volumes[0]), [f("n", 0o644, b"p")]);
    let yaml = pod_with(
        "  - name: s\n    projected: {sources: [{secret: {name: tls}}]}\n",
        &["s"],
    );
    assert_eq!(
        plan_with(&yaml, None).unwrap_err().to_string(),
        "spec.volumes[0].projected.sources[0].secret: not supported without a control plane"
    );
}

#[test]
fn bad_volumes_name_the_field() {
    let cm = |items: &str| format!("  - name: v\n    configMap: {{name: app, items: [{items}]}}\n");
    let cases = [
        (cm("{key: motd, path: ../x}"), "spec.volumes[0].configMap.items[0].path: must be a relative path without '..'"),
        (cm("{key: motd, path: a}, {key: motd, path: /abs}"), "spec.volumes[0].configMap.items[1].path: must be a relative path without '..'"),
        (cm("{key: motd, path: ..data}"), "spec.volumes[0].configMap.items[0].path: must be a relative path without '..'"),
        (cm("{key: motd, path: a/../../b}"), "spec.volumes[0].configMap.items[0].path: must be a relative path without '..'"),
        (cm("{key: motd, path: \"a//b\"}"), "spec.volumes[0].configMap.items[0].path: must be a relative path of file names (no '.' or empty parts)"),
        (cm("{key: motd, path: \"\"}"), "spec.volumes[0].configMap.items[0].path: required"),
        (cm("{key: motd, path: a}, {key: logo.png, path: a}"), "spec.volumes[0].configMap.items[1].path: \"a\" is also the path of spec.volumes[0].configMap.items[0]"),
        (cm("{key: motd, path: a}, {key: logo.png, path: a/b}"), "spec.volumes[0]: \"a\" is both a file and the directory of \"a/b\""),
        (cm("{key: motd, path: a, mode: 512}"), "spec.volumes[0].configMap.items[0].mode: 512 is not between 0 and 0777 (octal)"),
        ("  - name: v\n    secret: {secretName: tls, defaultMode: -1}\n".into(), "spec.volumes[0].secret.defaultMode: -1 is not between 0 and 0777 (octal)"),
        ("  - name: v\n    projected: {sources: [{serviceAccountToken: {path: token}}]}\n".into(), "spec.volumes[0].projected.sources[0].serviceAccountToken: not supported yet"),
        ("  - name: v\n    downwardAPI: {items: [{path: x, fieldRef: {fieldPath: spec.nodeName}}]}\n".into(), "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: unsupported field \"spec.nodeName\""),
        ("  - name: v\n    downwardAPI: {items: [{path: x, resourceFieldRef: {resource: limits.cpu}}]}\n".into(), "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName: required"),
        ("  - name: v\n    downwardAPI: {items: [{path: x}]}\n".into(), "spec.volumes[0].downwardAPI.items[0]: exactly one of fieldRef and resourceFieldRef"),
        ("  - name: v\n    emptyDir: {medium: HugePages}\n".into(), "spec.volumes[0].emptyDir.medium: unsupported medium \"HugePages\" (only \"\" and Memory)"),
        ("  - name: v\n    nfs: {server: s, path: /x}\n".into(), "spec.volumes[0].nfs: not supported (only emptyDir, hostPath, configMap, secret, downwardAPI and projected)"),
    ];
    let objects = objects();
    for (volumes, want) in cases {
        let err = plan_with(&pod_with(&volumes, &["v"]), Some(&objects)).unwrap_err();
        assert_eq!(err.to_string(), want, "{volumes}");
        assert_eq!(err.kind, SpecErrorKind::Invalid, "{volumes}");
    }
    for (volumes, want) in [
        (
            cm("{key: nope, path: x}"),
            "spec.volumes[0].configMap.items[0].key: configmap references non-existent config key: nope",
        ),
        (
            "  - name: v\n    secret: {secretName: tls, items: [{key: nope, path: x}]}\n".into(),
            "spec.volumes[0].secret.items[0].key: references non-existent secret key: nope",
        ),
        (
            "  - name: v\n    secret: {secretName: other}\n".into(),
            "spec.volumes[0].secret: secret \"other\" not found",
        ),
    ] {
        let err = plan_with(&pod_with(&volumes, &["v"]), Some(&objects)).unwrap_err();
        assert_eq!(err.to_string(), want, "{volumes}");
        assert_eq!(err.kind, SpecErrorKind::Config, "{volumes}");
    }
}
