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
# hash of its inputs, and a per-run one with the job (lib.sh, shared with cluster.sh). Exit
# codes: the job's; 124 timeout; 125 the guest gave no result. Modules: $SKIFF_VM_MODULES are packed (the job can `modprobe` them),
# $SKIFF_VM_MODPROBE are loaded at boot (none by default: all of them cost ~1.3 s of boot).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
modprobe=${SKIFF_VM_MODPROBE:-}
TIMEOUT=${SKIFF_VM_TIMEOUT:-120} MEM=512 QUIET=0 cgroup=skiff-test bins=() extra=
usage() { sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts b:x:t:m:c:qh opt; do
  case $opt in
    b) bins+=("$OPTARG") ;;
    x) extra=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;;
    m) MEM=$OPTARG ;;
    c) cgroup=$OPTARG ;;
    q) QUIET=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
vm_require

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-vm.XXXXXX")
vm_pid=
cleanup() {
  [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null && wait "$vm_pid" 2>/dev/null
  rm -rf "$work"
  rm -f "$vm_cache"/initrd-base-*.tmp.$$
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

t0=$(vm_ms)

# 1. Kernel (downloaded once per machine and version).
vm_kernel
t_kernel=$(vm_ms)

# 2. Base initramfs: busybox + modules (with their dependencies) + init, cached by input hash.
vm_base_initrd
t_base=$(vm_ms)

# 3. The job's archive: the command, its settings, binaries and the extra tree.
j=$work/job
mkdir -p "$j"
for bin in "${bins[@]}"; do
  STRIP=1 vm_copy_in "$j" "$bin" "/usr/local/bin/$(basename "$bin")"
done
[ -n "$extra" ] && cp -a "$extra/." "$j/"
vm_job_archive "$j" "$work/job.cpio" "SKIFF_CGROUP=$cgroup
SKIFF_MODPROBE=$modprobe" -- "$@"
cat "$vm_base" "$work/job.cpio" >"$work/initrd.cpio"
t_job=$(vm_ms)

# 4. Boot. No network device at all; the console goes to a log (and stderr unless -q).
console=$work/console.log
vm_boot "$work/initrd.cpio" "$console" -nic none
qrc=0
wait "$vm_pid" || qrc=$?
vm_pid=
t_boot=$(vm_ms)

# 5. The result block.
vm_console_text "$console" >"$work/console.txt"
# The end marker may follow job output that lacks a final newline.
end='===== skiff-vm job end: exit'
rc=$(grep -ao "$end [0-9]*" "$work/console.txt" | tail -n 1 | grep -o '[0-9]*$' || true)
awk -v end="$end" '
  !on && /^===== skiff-vm job begin/ { on = 1; next }
  on && (i = index($0, end)) { if (i > 1) print substr($0, 1, i - 1); exit }
  on { print }' "$work/console.txt"
echo "run.sh: timing: kernel $(vm_secs $((t_kernel - t0))) s, initrd base $(vm_secs $((t_base - t_kernel))) s ($vm_base_state)," \
  "job archive $(vm_secs $((t_job - t_base))) s, guest $(vm_secs $((t_boot - t_job))) s, total $(vm_secs $((t_boot - t0))) s;" \
  "$(grep -o 'job begin (uptime [0-9.]*)' "$work/console.txt" || true)" >&2
if [ -n "$rc" ]; then
  echo "run.sh: job exit $rc" >&2
  exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "run.sh: guest timed out after $TIMEOUT s" >&2
  rc=124
else
  echo "run.sh: guest ended (qemu exit $qrc) without a job result" >&2
  rc=125
fi
[ "$QUIET" = 1 ] && { echo "run.sh: last console lines:" >&2; tail -n 30 "$work/console.txt" >&2; }
exit "$rc"
