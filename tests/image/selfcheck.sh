#!/usr/bin/env bash
# Self-check for tests/image/mkimage.py. Needs root, skopeo and umoci.
#   bash tests/image/selfcheck.sh            # bench at 100 MB
#   BENCH_MB=20 bash tests/image/selfcheck.sh
# Builds every variant (gzip, plus multi as zstd and none), checks that the
# output is byte-identical across two runs, that blob names match their sha256,
# that diff_ids match the decompressed layers, that skopeo and umoci accept the
# layouts, and that umoci's unpack of `multi` is the documented union view.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MK="python3 $HERE/mkimage.py"
BENCH_MB="${BENCH_MB:-100}"
WORK="$(mktemp -d /tmp/skiff-mkimage-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
ok()  { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

[ "$(id -u)" = 0 ] || { echo "selfcheck: run as root (umoci unpack)"; exit 1; }
command -v skopeo >/dev/null && command -v umoci >/dev/null \
  || { echo "selfcheck: needs skopeo and umoci (apt-get install skopeo umoci)"; exit 1; }

# verify_layout DIR: blob digests, diff_ids, skopeo, umoci unpack -> $WORK/unpack-NAME
verify_layout() {
  local dir="$1" name; name="$(basename "$dir")"
  local bad_blobs=0
  for b in "$dir"/blobs/sha256/*; do
    [ "$(sha256sum < "$b" | cut -d' ' -f1)" = "$(basename "$b")" ] || bad_blobs=1
  done
  [ $bad_blobs = 0 ] && ok "$name: every blob's sha256 matches its name" || bad "$name: blob digests"
  # "mediaType digest diff_id" per layer
  python3 - "$dir" > "$WORK/$name.layers" <<'EOF'
import json, sys
d = sys.argv[1]
blob = lambda dg: json.load(open(f"{d}/blobs/sha256/{dg.split(':')[1]}"))
idx = json.load(open(f"{d}/index.json"))
m = blob(idx["manifests"][0]["digest"])
cfg = blob(m["config"]["digest"])
assert len(cfg["rootfs"]["diff_ids"]) == len(m["layers"]) == len(cfg["history"])
for l, di in zip(m["layers"], cfg["rootfs"]["diff_ids"]):
    print(l["mediaType"], l["digest"].split(":")[1], di.split(":")[1])
EOF
  local bad_diff=0
  while read -r mt dg di; do
    case "$mt" in
      *tar+gzip) got="$(gzip -dc "$dir/blobs/sha256/$dg" | sha256sum | cut -d' ' -f1)";;
      *tar+zstd) got="$(zstd -dc "$dir/blobs/sha256/$dg" | sha256sum | cut -d' ' -f1)";;
      *) got="$(sha256sum < "$dir/blobs/sha256/$dg" | cut -d' ' -f1)";;
    esac
    [ "$got" = "$di" ] || bad_diff=1
  done < "$WORK/$name.layers"
  [ $bad_diff = 0 ] && ok "$name: diff_ids match decompressed layers ($(wc -l < "$WORK/$name.layers") layers)" \
    || bad "$name: diff_ids"
  check "$name: skopeo inspect oci:$dir:latest" skopeo inspect "oci:$dir:latest"
  rm -rf "$WORK/unpack-$name"
  if grep -q 'tar+zstd' "$WORK/$name.layers"; then
    # umoci 0.4.7 (Debian bookworm) rejects tar+zstd layers, so let skopeo
    # (containers/image) decompress them into a gzip layout and unpack that.
    # The config (and so every diff_id) must survive the conversion unchanged.
    check "$name: skopeo copy zstd -> gzip layout" skopeo copy -q "oci:$dir:latest" "oci:$WORK/$name-gz:latest" --dest-compress-format gzip
    check "$name: config digest unchanged by skopeo's recompression" bash -c \
      "[ \"\$(skopeo inspect --raw 'oci:$dir:latest' | python3 -c 'import json,sys;print(json.load(sys.stdin)[\"config\"][\"digest\"])')\" = \"\$(skopeo inspect --raw 'oci:$WORK/$name-gz:latest' | python3 -c 'import json,sys;print(json.load(sys.stdin)[\"config\"][\"digest\"])')\" ]"
    check "$name: umoci unpack of the skopeo-converted layout" umoci unpack --image "$WORK/$name-gz:latest" "$WORK/unpack-$name"
  else
    check "$name: umoci unpack --image $dir:latest" umoci unpack --image "$dir:latest" "$WORK/unpack-$name"
  fi
}

echo "== build"
$MK "$WORK/single" --variant single
$MK "$WORK/multi" --variant multi
$MK "$WORK/multi-zstd" --variant multi --compression zstd
$MK "$WORK/multi-none" --variant multi --compression none
t0=$(date +%s.%N)
$MK "$WORK/bench" --variant bench --bench-mb "$BENCH_MB"
t1=$(date +%s.%N)
echo "bench ($BENCH_MB MB) built in $(python3 -c "print(round($t1-$t0,2))") s"
du -sb "$WORK"/single "$WORK"/multi "$WORK"/multi-zstd "$WORK"/multi-none "$WORK"/bench

echo "== determinism"
for v in single multi bench; do
  $MK "$WORK/again-$v" --variant "$v" --bench-mb "$BENCH_MB"
  check "$v: byte-identical on rebuild" diff -r "$WORK/$v" "$WORK/again-$v"
  rm -rf "$WORK/again-$v"
done
$MK "$WORK/again-zstd" --variant multi --compression zstd
check "multi-zstd: byte-identical on rebuild" diff -r "$WORK/multi-zstd" "$WORK/again-zstd"
rm -rf "$WORK/again-zstd"
check "refuses non-empty OUT_DIR" bash -c "! $MK '$WORK/single' --variant single"
check "custom --tag" bash -c "$MK '$WORK/tagged' --variant single --tag v1 && skopeo inspect 'oci:$WORK/tagged:v1'"

echo "== layouts"
for v in single multi multi-zstd multi-none bench; do verify_layout "$WORK/$v"; done

echo "== single rootfs"
R="$WORK/unpack-single/rootfs"
check "single: chroot sh runs" bash -c "[ \"\$(chroot '$R' /bin/sh -c 'cat /etc/skiff-test-image; id -u')\" = \$'skiff busybox test image\n0' ]"
check "single: root/secret is 0400" bash -c "[ \"\$(stat -c %a '$R/root/secret')\" = 400 ]"
check "single: tmp is 1777" bash -c "[ \"\$(stat -c %a '$R/tmp')\" = 1777 ]"

echo "== multi union view (each unpacker)"
for v in multi multi-zstd multi-none; do
  R="$WORK/unpack-$v/rootfs"
  check "$v: gone/file removed by whiteout, gone/ kept" bash -c "[ ! -e '$R/gone/file' ] && [ -d '$R/gone' ] && [ -z \"\$(ls -A '$R/gone')\" ]"
  check "$v: opaque/ holds only c" bash -c "[ \"\$(ls -A '$R/opaque')\" = c ] && [ \"\$(cat '$R/opaque/c')\" = c ]"
  check "$v: no .wh. files leaked" bash -c "[ -z \"\$(find '$R' -name '.wh.*')\" ]"
  check "$v: keep/file kept" bash -c "[ \"\$(cat '$R/keep/file')\" = keep ]"
  check "$v: etc/skiff-test-image is v3" bash -c "[ \"\$(cat '$R/etc/skiff-test-image')\" = 'skiff busybox test image v3' ]"
  check "$v: hard link shares inode, nlink 2, mode 640" bash -c "[ \"\$(stat -c %i '$R/data/hardlink-src')\" = \"\$(stat -c %i '$R/data/hardlink-dst')\" ] && [ \"\$(stat -c %h:%a '$R/data/hardlink-dst')\" = 2:640 ]"
  check "$v: relative symlink" bash -c "[ \"\$(readlink '$R/data/symlink')\" = hardlink-src ] && [ \"\$(cat '$R/data/symlink')\" = linked ]"
  check "$v: absolute symlink" bash -c "[ \"\$(readlink '$R/data/abs-symlink')\" = /etc/skiff-test-image ]"
  check "$v: setuid 4755" bash -c "[ \"\$(stat -c %a '$R/data/setuid')\" = 4755 ]"
  check "$v: owned by 1000:1000" bash -c "[ \"\$(stat -c %u:%g '$R/data/owned')\" = 1000:1000 ]"
  check "$v: xattr user.skiff=yes" python3 -c "import os,sys; sys.exit(os.getxattr('$R/data/xattr','user.skiff')!=b'yes')"
  check "$v: fifo" test -p "$R/data/fifo"
  check "$v: empty-dir 0711 and empty" bash -c "[ \"\$(stat -c %a '$R/data/empty-dir')\" = 711 ] && [ -z \"\$(ls -A '$R/data/empty-dir')\" ]"
  check "$v: busybox applets" bash -c "[ -x '$R/bin/busybox' ] && [ \"\$(readlink '$R/bin/sh')\" = busybox ] && [ \"\$(readlink '$R/bin/[')\" = busybox ]"
done

echo "== bench"
check "bench: layer-5 files present" bash -c "[ -n \"\$(ls '$WORK/unpack-bench/rootfs/usr/share/bench/layer5/large')\" ]"
echo "bench unpacked: $(du -sb "$WORK/unpack-bench/rootfs" | cut -f1) bytes, $(find "$WORK/unpack-bench/rootfs" -type f | wc -l) files"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
