#!/usr/bin/env bash
# Runs one command as the job of a throwaway QEMU guest (TCG, no network) with full cgroup v2,
# prints the job's output on stdout and exits with the job's exit code.
#
#   vagrant/qemu/run.sh [-b BINARY]... [-x DIR] [-t SECS] [-m MIB] [-c CGROUP] [-q] -- CMD [ARG]...
#
#   -b BINARY  copy a host binary to /usr/local/bin in the guest, with its shared libraries
#              (debug info stripped when `strip` exists: less to unpack into guest memory)
#   -x DIR     copy a tree into the guest's root
#   -t SECS    kill the guest after SECS seconds (default $SKIFF_VM_TIMEOUT or 120); exit 124
#   -m MIB     guest memory (default 512)
#   -c CGROUP  the job runs in /sys/fs/cgroup/CGROUP (default skiff-test)
#   -q         do not copy the guest console to stderr
#
# The kernel comes from kernel.sh (cached in $SKIFF_VM_CACHE, default /var/cache/skiff-vm). The
# initramfs is two concatenated cpio archives: a base (busybox, modules, init.sh), cached by a
# hash of its inputs, and a per-run one with the job. Exit codes: the job's; 124 timeout; 125
# the guest gave no result. Modules: $SKIFF_VM_MODULES are packed (the job can `modprobe` them),
# $SKIFF_VM_MODPROBE are loaded at boot (none by default: all of them cost ~1.3 s of boot).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
modules=${SKIFF_VM_MODULES:-overlay veth bridge br_netfilter sch_ingress cls_bpf act_bpf ext4 virtio_pci virtio_net virtio_blk}
modprobe=${SKIFF_VM_MODPROBE:-}
timeout=${SKIFF_VM_TIMEOUT:-120} mem=512 cgroup=skiff-test quiet=0 bins=() extra=
usage() { sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts b:x:t:m:c:qh opt; do
  case $opt in
    b) bins+=("$OPTARG") ;;
    x) extra=$OPTARG ;;
    t) timeout=$OPTARG ;;
    m) mem=$OPTARG ;;
    c) cgroup=$OPTARG ;;
    q) quiet=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: needs qemu-system-x86_64 (apt-get install qemu-system-x86)" >&2; exit 125; }
busybox=$(command -v busybox) || { echo "run.sh: needs busybox (apt-get install busybox-static)" >&2; exit 125; }

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-vm.XXXXXX")
qpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  rm -rf "$work"
  rm -f "$cache"/initrd-base-*.tmp.$$
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
t0=$(ms)

# Copies FILE (and, for an executable, its shared libraries) into tree ROOT, at DEST or FILE's path.
copy_in() {
  local root=$1 file=$2 dest=${3:-$2} lib
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$file" "$root$dest"
  for lib in $(ldd "$file" 2>/dev/null | grep -oE '/[^ ]+' || true); do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"; }
  done
}

pack() { (cd "$1" && find . | "$busybox" cpio -o -H newc 2>/dev/null); }

# 1. Kernel (downloaded once per machine and version).
kdir=$("$here/kernel.sh")
kv=$(basename "$(ls -d "$kdir"/lib/modules/*/ | head -n 1)")
kernel=$kdir/vmlinux # PVH: no emulated decompression
[ -e "$kernel" ] || kernel=$kdir/boot/vmlinuz-$kv
t_kernel=$(ms)

# 2. Base initramfs: busybox + modules (with their dependencies) + init, cached by input hash.
key=$({ echo "$kv $modules"; cat "$here/init.sh" "$0" "$busybox"; } | sha256sum | cut -c1-16)
base=$cache/initrd-base-$kv-$key.cpio
base_state=cached
if [ ! -s "$base" ]; then
  base_state=built
  b=$work/base
  mkdir -p "$b"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,run,etc,root,skiff}
  copy_in "$b" "$busybox" /bin/busybox
  for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$b/bin/$a"; done
  cp "$here/init.sh" "$b/init" && chmod 755 "$b/init"
  md=$kdir/lib/modules/$kv
  mkdir -p "$b/lib/modules/$kv"
  cp "$md/modules.builtin" "$md/modules.order" "$b/lib/modules/$kv/"
  declare -A want=()
  for m in $modules; do
    line=$(grep -E "^([^: ]*/)?${m}\.ko:" "$md/modules.dep") ||
      { grep -qE "/${m}\.ko$" "$md/modules.builtin" || echo "run.sh: no module $m" >&2; continue; }
    for f in ${line/:/}; do want[$f]=1; done
  done
  for f in "${!want[@]}"; do
    mkdir -p "$b/lib/modules/$kv/$(dirname "$f")"
    cp "$md/$f" "$b/lib/modules/$kv/$f"
    grep -E "^$f:" "$md/modules.dep" >>"$b/lib/modules/$kv/modules.dep"
  done
  pack "$b" >"$base.tmp.$$" && mv "$base.tmp.$$" "$base"
  rm -rf "$b"
  # Bases of older inputs: dropped once unused for a week (each run touches its own).
  find "$cache" -maxdepth 1 -name 'initrd-base-*.cpio' -mtime +7 -delete
fi
touch "$base"
t_base=$(ms)

# 3. The job's archive: the command, its settings, binaries and the extra tree.
j=$work/job
mkdir -p "$j/skiff"
for bin in "${bins[@]}"; do
  dest=/usr/local/bin/$(basename "$bin")
  copy_in "$j" "$bin" "$dest"
  if command -v strip >/dev/null; then strip --strip-debug "$j$dest" 2>/dev/null || true; fi
done
[ -n "$extra" ] && cp -a "$extra/." "$j/"
quote() { local a out=; for a in "$@"; do out+=" '${a//\'/\'\\\'\'}'"; done; echo "${out# }"; }
echo "exec $(quote "$@")" >"$j/skiff/job.sh"
printf 'SKIFF_CGROUP=%s\nSKIFF_MODPROBE=%s\n' "$(quote "$cgroup")" "$(quote "$modprobe")" >"$j/skiff/job.env"
{ cat "$base"; pack "$j"; } >"$work/initrd.cpio"
t_job=$(ms)

# 4. Boot. No network device at all; the console goes to a log (and stderr unless -q).
console=$work/console.log
if [ "$quiet" = 1 ]; then out=/dev/null; else out=/dev/stderr; fi
timeout --foreground -k 5 "$timeout" qemu-system-x86_64 -accel tcg -m "$mem" -smp 1 \
  -nographic -nodefaults -no-reboot -nic none \
  -chardev "stdio,id=con,signal=off,logfile=$console" -serial chardev:con \
  -kernel "$kernel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 panic=-1 loglevel=1" </dev/null >"$out" 2>&1 &
qpid=$!
qrc=0
wait "$qpid" || qrc=$?
qpid=
t_boot=$(ms)

# 5. The result block.
tr -d '\r\033' <"$console" >"$work/console.txt"
# The end marker may follow job output that lacks a final newline.
end='===== skiff-vm job end: exit'
rc=$(grep -ao "$end [0-9]*" "$work/console.txt" | tail -n 1 | grep -o '[0-9]*$' || true)
awk -v end="$end" '
  !on && /^===== skiff-vm job begin/ { on = 1; next }
  on && (i = index($0, end)) { if (i > 1) print substr($0, 1, i - 1); exit }
  on { print }' "$work/console.txt"
echo "run.sh: timing: kernel $(secs $((t_kernel - t0))) s, initrd base $(secs $((t_base - t_kernel))) s ($base_state)," \
  "job archive $(secs $((t_job - t_base))) s, guest $(secs $((t_boot - t_job))) s, total $(secs $((t_boot - t0))) s;" \
  "$(grep -o 'job begin (uptime [0-9.]*)' "$work/console.txt" || true)" >&2
if [ -n "$rc" ]; then
  echo "run.sh: job exit $rc" >&2
  exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "run.sh: guest timed out after $timeout s" >&2
  rc=124
else
  echo "run.sh: guest ended (qemu exit $qrc) without a job result" >&2
  rc=125
fi
[ "$quiet" = 1 ] && { echo "run.sh: last console lines:" >&2; tail -n 30 "$work/console.txt" >&2; }
exit "$rc"
