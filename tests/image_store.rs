//! End to end: the real `skiff` binary against a real registry (Debian's docker-registry on
//! 127.0.0.1), with images built from busybox-static and pushed with skopeo.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff::bench::registry::Registry;
use support::{build_image, listing, privileged_with, skiff, skiff_err, skiff_ok};

const TOOLS: &[&str] = &["docker-registry", "skopeo", "python3", "unshare", "busybox"];

struct Env {
    dir: tempfile::TempDir,
    registry: Registry,
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(&dir.path().join("registry")).unwrap();
        Env { dir, registry }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds a test image variant and pushes it as `skiff/<repo>:latest`; returns the reference.
    fn push(&self, variant: &str, repo: &str, extra: &[&str]) -> String {
        let layout = build_image(self.dir.path(), variant, extra);
        self.registry
            .push_layout(&layout, "latest", &format!("skiff/{repo}:latest"))
            .unwrap();
        format!("{}/skiff/{repo}:latest", self.registry.host())
    }
}

/// Mounts the image's layers as a read-only overlay in a private mount namespace and lists it.
fn overlay_view(root: &Path, reference: &str) -> Vec<String> {
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff_ok(root, &["image", "inspect", reference])).unwrap();
    let mut lowers: Vec<String> = inspect["image"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let diff_id = l["diff_id"].as_str().unwrap().trim_start_matches("sha256:");
            root.join("layers/sha256")
                .join(diff_id)
                .display()
                .to_string()
        })
        .collect();
    lowers.reverse(); // overlayfs lists the top layer first
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t overlay overlay -o ro,lowerdir={} {mnt} && cd {mnt} && find . -printf '%p|%y|%m|%U|%G|%s|%n|%l\\n' | sort && cat etc/skiff-test-image",
        lowers.join(":"),
        mnt = mnt.path().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "overlay mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn entry<'a>(view: &'a [String], path: &str) -> Option<&'a String> {
    view.iter().find(|l| l.split('|').next() == Some(path))
}

#[test]
fn pull_from_a_real_registry_then_hit_the_cache() {
    if !privileged_with(TOOLS) {
        return;
    }
    let env = Env::start();
    let reference = env.push("multi", "multi", &[]);
    let root = env.path("store");

    let out = skiff_ok(&root, &["image", "pull", "-q", &reference]);
    assert!(out.contains("fetched 3 of 3 layers"), "{out}");
    assert!(out.contains("unpacked 3"), "{out}");

    let view = overlay_view(&root, &reference);
    // Whiteout and opaque directory applied through overlayfs.
    assert!(entry(&view, "./gone").is_some(), "gone/ stays");
    assert!(
        entry(&view, "./gone/file").is_none(),
        "gone/file was whited out: {view:?}"
    );
    let opaque: Vec<_> = view.iter().filter(|l| l.starts_with("./opaque/")).collect();
    assert_eq!(opaque.len(), 1, "opaque/ holds only c: {opaque:?}");
    assert!(opaque[0].starts_with("./opaque/c|f|"));
    assert!(
        !view.iter().any(|l| l.contains("/.wh.")),
        "no whiteout files visible"
    );
    assert!(
        view.iter().any(|l| l == "skiff busybox test image v3"),
        "upper layer's file wins"
    );
    // Modes, ownership, links.
    assert!(
        entry(&view, "./data/setuid")
            .unwrap()
            .starts_with("./data/setuid|f|4755|")
    );
    assert!(
        entry(&view, "./data/owned")
            .unwrap()
            .starts_with("./data/owned|f|644|1000|1000|")
    );
    assert!(
        entry(&view, "./root/secret")
            .unwrap()
            .starts_with("./root/secret|f|400|0|0|")
    );
    assert!(entry(&view, "./tmp").unwrap().starts_with("./tmp|d|1777|"));
    assert!(
        entry(&view, "./data/empty-dir")
            .unwrap()
            .starts_with("./data/empty-dir|d|711|")
    );
    assert!(
        entry(&view, "./data/hardlink-dst")
            .unwrap()
            .contains("|f|640|0|0|7|2|"),
        "hard link shares the inode"
    );
    assert!(
        entry(&view, "./data/symlink")
            .unwrap()
            .ends_with("|l|777|0|0|12|1|hardlink-src")
    );
    assert!(
        entry(&view, "./data/abs-symlink")
            .unwrap()
            .ends_with("|/etc/skiff-test-image")
    );
    assert!(
        entry(&view, "./data/fifo")
            .unwrap()
            .starts_with("./data/fifo|p|")
    );
    assert!(entry(&view, "./bin/sh").unwrap().ends_with("|busybox"));

    // Pull again: everything cached, nothing downloaded.
    let again = skiff_ok(&root, &["image", "pull", "-q", &reference]);
    assert!(
        again.contains("fetched 0 of 3 layers, 0 bytes; unpacked 0"),
        "{again}"
    );
    assert!(skiff_ok(&root, &["image", "check"]).contains("ok: 1 images"));
}

#[test]
fn a_corrupted_blob_is_a_digest_error_and_leaves_the_store_unchanged() {
    if !privileged_with(TOOLS) {
        return;
    }
    let env = Env::start();
    let reference = env.push("single", "corrupt", &[]);
    let root = env.path("store");
    skiff_ok(&root, &["image", "ls"]);
    let before = listing(&root);

    // Flip bytes in the middle of the layer blob inside the registry's storage.
    let layout = env.path("layout-single");
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap())
            .unwrap()
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let data = env.registry.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&data, bytes).unwrap();

    let err = skiff_err(&root, &["image", "pull", "-q", &reference]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(listing(&root), before, "the store is unchanged");
}

#[test]
fn a_pull_killed_half_way_completes_next_time() {
    if !privileged_with(TOOLS) {
        return;
    }
    let env = Env::start();
    let reference = env.push("bench", "big", &["--bench-mb", "40", "--bench-layers", "4"]);
    let root = env.path("store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--root")
        .arg(&root)
        .args(["image", "pull", "-q", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as content is being written.
    let deadline = Instant::now() + Duration::from_secs(30);
    let tmp = root.join("tmp");
    while Instant::now() < deadline {
        let busy = std::fs::read_dir(&tmp)
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the pull was killed before it finished");
    assert!(
        skiff_ok(&root, &["image", "ls"]).lines().count() == 1,
        "no half image is listed"
    );

    let out = skiff_ok(&root, &["image", "pull", "-q", &reference]);
    assert!(out.contains("of 4 layers"), "{out}");
    assert!(skiff_ok(&root, &["image", "check"]).contains("ok: 1 images"));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the killed pull's leftovers are gone"
    );
}

#[test]
fn import_layouts_and_archives_then_remove_and_prune() {
    if !privileged_with(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let layout = build_image(dir.path(), "single", &[]);
    let oci_archive = dir.path().join("oci.tar");
    let docker_archive = dir.path().join("docker.tar");
    for dest in [
        format!(
            "oci-archive:{}:skiff.test/archived:v1",
            oci_archive.display()
        ),
        format!(
            "docker-archive:{}:skiff.test/saved:v2",
            docker_archive.display()
        ),
    ] {
        let status = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(dest)
            .status()
            .unwrap();
        assert!(status.success());
    }

    let err = skiff_err(&root, &["image", "import", layout.to_str().unwrap()]);
    assert!(err.contains("pass --name"), "{err}");
    skiff_ok(
        &root,
        &[
            "image",
            "import",
            "-q",
            layout.to_str().unwrap(),
            "--name",
            "skiff.test/layout:latest",
        ],
    );
    skiff_ok(
        &root,
        &["image", "import", "-q", oci_archive.to_str().unwrap()],
    );
    let saved = skiff_ok(
        &root,
        &["image", "import", "-q", docker_archive.to_str().unwrap()],
    );
    assert!(
        saved.contains("docker.io/skiff.test/saved:v2") || saved.contains("skiff.test/saved:v2"),
        "{saved}"
    );
    let ls = skiff_ok(&root, &["image", "ls"]);
    for name in [
        "skiff.test/layout:latest",
        "skiff.test/archived:v1",
        "skiff.test/saved:v2",
    ] {
        assert!(ls.contains(name), "{name} listed:\n{ls}");
    }
    // The docker archive's layer is uncompressed but has the same diffID: one layer on disk.
    assert_eq!(
        std::fs::read_dir(root.join("layers/sha256"))
            .unwrap()
            .count(),
        1
    );
    let view = overlay_dirs_listing(&root);
    assert!(
        view.iter().any(|l| l.starts_with("./bin/busybox|f|755|")),
        "{view:?}"
    );

    // rm keeps what another image still uses; the last rm frees it.
    let rm = skiff_ok(&root, &["image", "rm", "skiff.test/layout:latest"]);
    assert!(rm.contains("removed skiff.test/layout:latest"), "{rm}");
    assert_eq!(
        std::fs::read_dir(root.join("layers/sha256"))
            .unwrap()
            .count(),
        1
    );
    let err = skiff_err(&root, &["image", "rm", "skiff.test/nope:latest"]);
    assert!(err.contains("not found"), "{err}");
    skiff_ok(&root, &["image", "rm", "skiff.test/archived:v1"]);
    let pruned = skiff_ok(&root, &["image", "prune", "--all"]);
    assert!(pruned.contains("removed"), "{pruned}");
    assert_eq!(
        std::fs::read_dir(root.join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(skiff_ok(&root, &["image", "ls"]).lines().count(), 1);
}

fn overlay_dirs_listing(root: &Path) -> Vec<String> {
    let layers = root.join("layers/sha256");
    let only = std::fs::read_dir(&layers)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    listing(&only)
}

#[test]
fn bad_input_gets_a_one_line_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    skiff_ok(&root, &["image", "ls"]);
    let before = listing(&root);
    for (args, wanted) in [
        (vec!["image", "pull", "Not/Valid"], "lowercase"),
        (vec!["image", "pull", "busybox:bad tag"], "invalid tag"),
        (vec!["image", "inspect", "skiff.test/missing"], "not found"),
        (
            vec!["image", "import", "/nonexistent/layout"],
            "/nonexistent/layout",
        ),
        (
            vec!["image", "pull", "127.0.0.1:1/nothing/here:latest"],
            "127.0.0.1:1",
        ),
    ] {
        let err = skiff_err(&root, &args);
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
    assert_eq!(listing(&root), before);
    let _ = skiff(&root, &["image", "check"]);
}

/// Rewrites a layout so that `index.json` points at an image index with an arm64 entry first
/// and the real linux/amd64 manifest second.
fn wrap_in_index(layout: &Path) {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest = index["manifests"][0].clone();
    let mut arm = manifest.clone();
    arm["platform"] = serde_json::json!({"architecture": "arm64", "os": "linux"});
    let mut amd = manifest.clone();
    amd["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    amd.as_object_mut().unwrap().remove("annotations");
    arm.as_object_mut().unwrap().remove("annotations");
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm, amd],
    }))
    .unwrap();
    let digest = skiff_runtime_digest(&nested);
    std::fs::write(layout.join("blobs/sha256").join(&digest), &nested).unwrap();
    index["manifests"][0] = serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{digest}"),
        "size": nested.len(),
        "annotations": manifest["annotations"].clone(),
    });
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn skiff_runtime_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn pull_accepts_docker_schema2_zstd_plain_layers_and_indexes() {
    if !privileged_with(&[TOOLS, &["zstd"]].concat()) {
        return;
    }
    let env = Env::start();
    let root = env.path("store");
    // Docker schema 2 (skopeo converts the manifest on push).
    let layout = build_image(env.dir.path(), "multi", &[]);
    let status = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
        ])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker://{}/skiff/docker:latest",
            env.registry.host()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let out = skiff_ok(
        &root,
        &[
            "image",
            "pull",
            "-q",
            &format!("{}/skiff/docker:latest", env.registry.host()),
        ],
    );
    assert!(out.contains("fetched 3 of 3 layers"), "{out}");
    let view = overlay_view(
        &root,
        &format!("{}/skiff/docker:latest", env.registry.host()),
    );
    assert!(entry(&view, "./gone/file").is_none() && entry(&view, "./opaque/c").is_some());

    // zstd and uncompressed layers: same diffIDs, so the layers are already unpacked.
    for (compression, repo) in [("zstd", "zstd"), ("none", "plain")] {
        let dir = env.path(compression);
        std::fs::create_dir(&dir).unwrap();
        let layout = build_image(&dir, "multi", &["--compression", compression]);
        env.registry
            .push_layout(&layout, "latest", &format!("skiff/{repo}:latest"))
            .unwrap();
        let reference = format!("{}/skiff/{repo}:latest", env.registry.host());
        let out = skiff_ok(&root, &["image", "pull", "-q", &reference]);
        assert!(
            out.contains("fetched 3 of 3 layers") && out.contains("unpacked 0"),
            "{compression}: {out}"
        );
    }

    // An image index: linux/amd64 is chosen over the arm64 entry listed first.
    let dir = env.path("indexed");
    std::fs::create_dir(&dir).unwrap();
    let layout = build_image(&dir, "single", &[]);
    wrap_in_index(&layout);
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker://{}/skiff/indexed:latest",
            env.registry.host()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let reference = format!("{}/skiff/indexed:latest", env.registry.host());
    let out = skiff_ok(&root, &["image", "pull", "-q", &reference]);
    assert!(out.contains("fetched 1 of 1 layers"), "{out}");
    // The layout with the index imports the same way.
    let imported = skiff_ok(
        &root,
        &[
            "image",
            "import",
            "-q",
            layout.to_str().unwrap(),
            "--name",
            "skiff.test/indexed:1",
        ],
    );
    assert!(imported.contains("skiff.test/indexed:1"), "{imported}");
}

#[test]
fn pull_uses_credentials_from_a_docker_auth_file() {
    if !privileged_with(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry =
        Registry::start_with_auth(&dir.path().join("registry"), "skiff", "s3cret").unwrap();
    let layout = build_image(dir.path(), "single", &[]);
    registry
        .push_layout_as(
            &layout,
            "latest",
            "private/busybox:latest",
            Some("skiff:s3cret"),
        )
        .unwrap();
    let reference = format!("{}/private/busybox:latest", registry.host());
    let root = dir.path().join("store");

    let empty = dir.path().join("none.json");
    std::fs::write(&empty, "{}").unwrap();
    let err = skiff_err(
        &root,
        &[
            "image",
            "pull",
            "-q",
            "--auth-file",
            empty.to_str().unwrap(),
            &reference,
        ],
    );
    assert!(err.contains("Not authorized"), "{err}");

    let auth = dir.path().join("config.json");
    // base64("skiff:s3cret")
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"c2tpZmY6czNjcmV0"}}}}}}"#,
        registry.host()
    );
    std::fs::write(&auth, config).unwrap();
    let out = skiff_ok(
        &root,
        &[
            "image",
            "pull",
            "-q",
            "--auth-file",
            auth.to_str().unwrap(),
            &reference,
        ],
    );
    assert!(out.contains("fetched 1 of 1 layers"), "{out}");
}
