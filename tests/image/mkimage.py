#!/usr/bin/env python3
"""Build deterministic OCI image layouts from Debian's busybox-static.

Usage:
  python3 tests/image/mkimage.py OUT_DIR --variant single|multi|bench
      [--tag TAG] [--compression gzip|zstd|none]
      [--bench-mb 100] [--bench-layers 5] [--busybox /bin/busybox]

Standard library only (zstd compression shells out to the `zstd` command).
Every run with the same arguments and the same busybox binary produces the
same bytes: fixed mtimes, uid/gid 0 unless stated, sorted entries, gzip
header with mtime=0 and no file name, seeded PRNG for bench content.
See tests/image/README.md for the contents of each variant.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile

MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # == MTIME
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

APPLETS = [
    "sh", "ash", "cat", "echo", "ls", "sleep", "true", "false", "httpd", "nc",
    "wget", "id", "env", "mkdir", "rm", "touch", "chmod", "stat", "head",
    "tail", "grep", "sed", "wc", "ps", "kill", "mount", "umount", "hostname",
    "dd", "seq", "sync", "printf", "test", "[", "cp", "mv", "ln", "readlink",
    "sha256sum", "md5sum", "date", "uname", "whoami", "yes", "nslookup", "ip",
    "stty", "tty", "tr", "fold",
]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nuser:x:1000:\n"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def die(msg):
    print(f"mkimage: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------
# Layer model: a list of entry dicts, turned into a tar by build_tar().
#   kind: dir | file | symlink | hardlink | fifo
#   path: relative, no leading "./", no trailing "/"
# --------------------------------------------------------------------------

def d(path, mode=0o755, **kw):
    return dict(kind="dir", path=path, mode=mode, **kw)


def f(path, data, mode=0o644, **kw):
    if isinstance(data, str):
        data = data.encode()
    return dict(kind="file", path=path, data=data, mode=mode, **kw)


def sym(path, target, **kw):
    return dict(kind="symlink", path=path, target=target, mode=0o777, **kw)


def hard(path, target, **kw):
    return dict(kind="hardlink", path=path, target=target, mode=0o644, **kw)


def fifo(path, mode=0o644, **kw):
    return dict(kind="fifo", path=path, mode=mode, **kw)


def order_entries(entries):
    """Sort by path components (parents before children) and move each hard
    link right after its target when the target would otherwise come later."""
    by_path = {}
    for e in entries:
        if e["path"] in by_path:
            raise ValueError(f"duplicate entry {e['path']}")
        by_path[e["path"]] = e
    # Every parent directory of an entry must be present in the same layer.
    for p in list(by_path):
        parts = p.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in by_path:
                raise ValueError(f"layer lacks parent dir {parent!r} of {p!r}")
            if by_path[parent]["kind"] != "dir":
                raise ValueError(f"parent {parent!r} of {p!r} is not a dir")
    ordered = sorted(by_path.values(), key=lambda e: e["path"].split("/"))
    out, emitted, waiting = [], set(), {}
    for e in ordered:
        if e["kind"] == "hardlink" and e["target"] not in emitted:
            waiting.setdefault(e["target"], []).append(e)
            continue
        out.append(e)
        emitted.add(e["path"])
        for w in waiting.pop(e["path"], []):
            out.append(w)
            emitted.add(w["path"])
    if waiting:
        raise ValueError(f"hard link targets missing: {sorted(waiting)}")
    return out


def build_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in order_entries(entries):
            ti = tarfile.TarInfo(e["path"])
            ti.mtime = MTIME
            ti.mode = e["mode"]
            ti.uid = e.get("uid", 0)
            ti.gid = e.get("gid", 0)
            ti.uname = ""
            ti.gname = ""
            if e.get("pax"):
                ti.pax_headers = dict(e["pax"])
            data = None
            k = e["kind"]
            if k == "dir":
                ti.type = tarfile.DIRTYPE
            elif k == "file":
                ti.type = tarfile.REGTYPE
                data = e["data"]
                ti.size = len(data)
            elif k == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e["target"]
            elif k == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e["target"]
            elif k == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                raise ValueError(k)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(raw, how):
    if how == "none":
        return raw
    if how == "gzip":
        out = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                           compresslevel=6) as gz:
            gz.write(raw)
        return out.getvalue()
    if how == "zstd":
        r = subprocess.run(
            ["zstd", "-q", "-19", "-T1", "--no-progress", "-c"],
            input=raw, stdout=subprocess.PIPE, check=True)
        return r.stdout
    raise ValueError(how)


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------

def single_entries(busybox):
    es = [
        d("bin"),
        f("bin/busybox", busybox, 0o755),
        d("etc"),
        f("etc/passwd", PASSWD),
        f("etc/group", GROUP),
        f("etc/skiff-test-image", "skiff busybox test image\n"),
        d("tmp", 0o1777),
        d("root", 0o700),
        f("root/secret", "top secret\n", 0o400),
        d("proc"),
        d("sys"),
        d("dev"),
        d("var"),
        d("var/www"),
        f("var/www/index.html", "hello from skiff\n"),
    ]
    es += [sym(f"bin/{a}", "busybox") for a in APPLETS]
    return es


def multi_layers(busybox):
    l1 = single_entries(busybox) + [
        d("opaque"), f("opaque/a", "a\n"), f("opaque/b", "b\n"),
        d("gone"), f("gone/file", "bye\n"),
        d("keep"), f("keep/file", "keep\n"),
    ]
    l2 = [
        d("data"),
        f("data/hardlink-src", "linked\n", 0o640),
        dict(hard("data/hardlink-dst", "data/hardlink-src"), mode=0o640),
        sym("data/symlink", "hardlink-src"),
        sym("data/abs-symlink", "/etc/skiff-test-image"),
        f("data/setuid", "s\n", 0o4755),
        f("data/owned", "u\n", uid=1000, gid=1000),
        f("data/xattr", "x\n", pax={"SCHILY.xattr.user.skiff": "yes"}),
        fifo("data/fifo"),
        d("data/empty-dir", 0o711),
    ]
    l3 = [
        d("gone"), f("gone/.wh.file", b"", 0o600),
        d("opaque"), f("opaque/.wh..wh..opq", b"", 0o600),
        f("opaque/c", "c\n"),
        d("etc"), f("etc/skiff-test-image", "skiff busybox test image v3\n"),
    ]
    return [
        (l1, "single busybox image + opaque/{a,b} gone/file keep/file"),
        (l2, "data/: hard link, symlinks, setuid, owned, xattr, fifo, empty dir"),
        (l3, "whiteout gone/file, opaque opaque/ + c, changed etc/skiff-test-image"),
    ]


WORDS = ("skiff kubelet pod container sandbox runtime image layer overlay "
         "snapshot cgroup namespace mount network volume secret config probe "
         "restart backoff lorem ipsum dolor sit amet consectetur").split()


def text_pool(rng, size):
    lines, n, i = [], 0, 0
    while n < size:
        line = "%08d %s\n" % (i, " ".join(rng.choice(WORDS) for _ in range(10)))
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines).encode()


def bench_layers(busybox, total_mb, nlayers):
    if nlayers < 1:
        die("--bench-layers must be >= 1")
    single = single_entries(busybox)
    layers = [(single, "single busybox image")]
    if nlayers == 1:
        return layers
    single_size = sum(len(e.get("data", b"")) for e in single)
    remaining = max(total_mb * 1024 * 1024 - single_size, 0)
    per_layer = remaining // (nlayers - 1)
    for n in range(2, nlayers + 1):
        rng = random.Random(0x5C1FF000 + n)
        pool = text_pool(rng, 1 << 20)
        base = f"usr/share/bench/layer{n}"
        es = [d("usr"), d("usr/share"), d("usr/share/bench"), d(base)]
        ndirs = 16
        for i in range(ndirs):
            es.append(d(f"{base}/d{i:02d}"))
        es.append(d(f"{base}/large"))

        def content(size):
            if rng.random() < 0.5:
                return rng.randbytes(size)  # incompressible
            off = rng.randrange(len(pool))
            reps = (off + size) // len(pool) + 1
            return (pool * reps)[off:off + size] if reps > 1 else pool[off:off + size]

        small_budget = int(per_layer * 0.4)
        used, i = 0, 0
        while used < small_budget:
            size = min(int(1024 * 64 ** rng.random()), 64 * 1024,
                       small_budget - used)
            size = max(size, 1)
            ext = "bin" if i % 2 else "txt"
            es.append(f(f"{base}/d{i % ndirs:02d}/f{i:05d}.{ext}", content(size)))
            used += size
            i += 1
        j = 0
        while used < per_layer:
            size = min(rng.randint(1 << 20, 10 << 20), per_layer - used)
            es.append(f(f"{base}/large/blob{j:03d}.dat", content(size)))
            used += size
            j += 1
        layers.append((es, f"bench layer {n}: {i} small files, {j} large files"))
    return layers


# --------------------------------------------------------------------------
# OCI layout
# --------------------------------------------------------------------------

def jbytes(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def write_blob(out, data):
    h = hashlib.sha256(data).hexdigest()
    p = os.path.join(out, "blobs", "sha256", h)
    if not os.path.exists(p):
        with open(p, "wb") as fh:
            fh.write(data)
    return "sha256:" + h


def write_layout(out, layers, tag, compression):
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    layer_descs, diff_ids, history = [], [], []
    for entries, comment in layers:
        raw = build_tar(entries)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blob = compress(raw, compression)
        layer_descs.append({"mediaType": MT_LAYER[compression],
                            "digest": write_blob(out, blob),
                            "size": len(blob)})
        history.append({"created": CREATED,
                        "created_by": f"skiff tests/image/mkimage.py: {comment}"})
    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    cfg = jbytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": write_blob(out, cfg),
                   "size": len(cfg)},
        "layers": layer_descs,
    }
    man = jbytes(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": write_blob(out, man),
            "size": len(man),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(out, "index.json"), "wb") as fh:
        fh.write(jbytes(index))
    with open(os.path.join(out, "oci-layout"), "wb") as fh:
        fh.write(jbytes({"imageLayoutVersion": "1.0.0"}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("out")
    ap.add_argument("--variant", required=True, choices=["single", "multi", "bench"])
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--compression", default="gzip", choices=["gzip", "zstd", "none"])
    ap.add_argument("--bench-mb", type=int, default=100)
    ap.add_argument("--bench-layers", type=int, default=5)
    ap.add_argument("--busybox", default="/bin/busybox")
    a = ap.parse_args(argv)

    if not os.path.isfile(a.busybox):
        die(f"{a.busybox} not found: apt-get install busybox-static")
    if a.compression == "zstd" and shutil.which("zstd") is None:
        die("--compression zstd needs the zstd command: apt-get install zstd")
    if os.path.exists(a.out) and (not os.path.isdir(a.out) or os.listdir(a.out)):
        die(f"{a.out} exists and is not an empty directory")
    with open(a.busybox, "rb") as fh:
        busybox = fh.read()

    if a.variant == "single":
        layers = [(single_entries(busybox), "single busybox image")]
    elif a.variant == "multi":
        layers = multi_layers(busybox)
    else:
        layers = bench_layers(busybox, a.bench_mb, a.bench_layers)
    os.makedirs(a.out, exist_ok=True)
    write_layout(a.out, layers, a.tag, a.compression)


if __name__ == "__main__":
    main()
