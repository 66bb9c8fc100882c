#!/usr/bin/env bash
# A two-node skiff cluster in QEMU guests (TCG, full cgroup v2), provisioned by the same
# vagrant/provision.sh the Vagrant VMs use: a control-plane guest (`skiff up`) and a worker
# guest (`skiff kubelet`) on a private link — `-netdev socket` over 127.0.0.1, addresses
# 192.168.56.10 and .11 exist only on that link. The host reaches the API server through
# QEMU user-mode networking with `restrict=on` (the guest cannot reach out) and one
# `hostfwd` bound to 127.0.0.1. The join token and the cluster CA are made here, in advance,
# so both guests boot at once: the worker pins the CA by its hash.
#
#   vagrant/qemu/cluster.sh -o DIR -b SKIFF [-s SKIFF_SETUP] [-t SECS] [-m MIB] [-q]
#
#   -o DIR    where to write kubeconfig (the admin's, via the forwarded port), cp.log and
#             worker.log (the consoles); created if missing, left in place
#   -b FILE   the skiff binary for the guests (copied with its libraries, stripped)
#   -s FILE   skiff-setup (the small container setup helper), if built
#   -t SECS   kill the guests after SECS seconds (default 900)
#   -m MIB    memory of each guest (default 640)
#   -q        do not copy the guest consoles to stderr
#
# Prints `ready kubeconfig=DIR/kubeconfig` on stdout when the API server answers through the
# forwarded port, then keeps the cluster up until stdin reaches EOF or a signal arrives, and
# tears everything down (guests, temp dir). Exits 1 if the cluster did not come up.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
TIMEOUT=900 MEM=320 QUIET=0 out= skiff= setup=
usage() { sed -n '10,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts o:b:s:t:m:qh opt; do
  case $opt in
    o) out=$OPTARG ;;
    b) skiff=$OPTARG ;;
    s) setup=$OPTARG ;;
    t) TIMEOUT=$OPTARG ;;
    m) MEM=$OPTARG ;;
    q) QUIET=1 ;;
    *) usage ;;
  esac
done
[ -n "$out" ] && [ -n "$skiff" ] || usage
vm_require
for p in openssl python3 ss; do
  command -v "$p" >/dev/null || { echo "cluster.sh: needs $p" >&2; exit 125; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-cluster.XXXXXX")
pids=() reader=
cleanup() {
  local p
  for p in "${pids[@]}" $reader; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $reader; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  rm -f "$vm_cache"/initrd-base-*.tmp.$$
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
log() { echo "cluster.sh: $*" >&2; }
# The caller ends the cluster by closing our stdin, also while it is coming up (a killed test
# closes it too). A background job's stdin would be /dev/null: hand it ours explicitly.
exec 3<&0
cat <&3 >/dev/null &
reader=$!
# Exits unless every guest is still there.
check_guests() {
  local p rc
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      rc=0
      wait "$p" || rc=$?
      log "a guest stopped (exit $rc) $1; consoles: $out/cp.log $out/worker.log"
      exit 1
    fi
  done
}
t0=$(vm_ms)

# 1. Kernel and base initramfs (cached).
vm_kernel
vm_base_initrd
t_base=$(vm_ms)

# 2. What is decided in advance, as a Vagrant user's machine does it: the join token and the
# cluster CA, whose hash the worker pins.
token=$(openssl rand -hex 3).$(openssl rand -hex 8)
mkdir -p "$work/ca"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca/ca.key" 2>/dev/null
openssl req -x509 -key "$work/ca/ca.key" -out "$work/ca/ca.crt" -days 3650 -subj "/CN=skiff-ca" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
hash=sha256:$(openssl x509 -in "$work/ca/ca.crt" -pubkey -noout |
  openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)

# 3. The payload both guests carry: skiff (stripped), provision.sh, the busybox test image.
p=$work/payload
mkdir -p "$p/skiff/vagrant"
# Where provision.sh installs them: it finds them in place and copies nothing.
STRIP=all vm_copy_in "$p" "$skiff" /usr/local/bin/skiff
[ -n "$setup" ] && STRIP=all vm_copy_in "$p" "$setup" /usr/local/bin/skiff-setup
cp "$repo/vagrant/provision.sh" "$p/skiff/vagrant/"
python3 "$repo/tests/image/mkimage.py" "$p/skiff/busybox" --variant single >/dev/null
vm_pack "$p" >"$work/payload.cpio"
rm -rf "$p"
t_payload=$(vm_ms)

# 4. Each guest's job: provision its role, print what the host needs, stay up.
cp_ip=192.168.56.10 worker_ip=192.168.56.11
common="--token $token --binary /usr/local/bin/skiff --image /skiff/busybox --init background --wait 600"
guest() { # NAME IP JOB-ARGS...: writes $work/NAME.cpio (base + payload + job)
  local name=$1 ip=$2 net="eth0=$2/24"
  shift 2
  [ "$name" = cp ] && net="$net eth1=10.0.2.15/24"
  mkdir -p "$work/job-$name"
  [ "$name" = cp ] && cp -a "$work/ca" "$work/job-$name/ca"
  vm_job_archive "$work/job-$name" "$work/job-$name.cpio" "SKIFF_CGROUP=skiff-test
SKIFF_MODPROBE=virtio_pci virtio_net overlay veth bridge
SKIFF_TMPFS_ROOT=1
SKIFF_HOSTNAME=$name
SKIFF_NET=$net" -- sh -c "($*) || { tail -n 50 /var/log/skiff-*.log; echo '$failed'; }"
  cat "$vm_base" "$work/payload.cpio" "$work/job-$name.cpio" >"$work/$name.cpio"
  rm -rf "$work/job-$name" "$work/job-$name.cpio"
}
failed='===== skiff-vm provisioning failed ====='
# The daemons' logs follow on the console, where the host (and a failing test) can read them.
hold='echo "===== skiff-vm provisioned ====="; free -m | sed -n 2p; exec tail -n +1 -F /var/log/skiff-*.log'
guest cp "$cp_ip" "sh /skiff/vagrant/provision.sh controlplane --address $cp_ip $common" \
  "--ca-cert /ca/ca.crt --ca-key /ca/ca.key --kubeconfig-out /skiff/kubeconfig &&" \
  "echo '===== skiff-vm kubeconfig begin =====' && cat /skiff/kubeconfig &&" \
  "echo '===== skiff-vm kubeconfig end =====' && $hold"
guest worker-1 "$worker_ip" "sh /skiff/vagrant/provision.sh worker --address $worker_ip ${common/--wait 600/--wait 0}" \
  "--api-server $cp_ip --ca-cert-hash $hash && $hold"
rm -f "$work/payload.cpio"
t_archives=$(vm_ms)

# 5. Boot both: the control plane listens on the link, the worker connects to it.
link=$(vm_free_port)
api=$(vm_free_port)
vm_boot "$work/cp.cpio" "$out/cp.log" \
  -netdev "socket,id=link,listen=127.0.0.1:$link" -device virtio-net-pci,netdev=link,mac=52:54:00:56:00:10,romfile= \
  -netdev "user,id=api,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:$api-10.0.2.15:6443" \
  -device virtio-net-pci,netdev=api,mac=52:54:00:02:00:15,romfile=
pids+=("$vm_pid")
for _ in $(seq 100); do
  ss -Hltn "sport = :$link" | grep -q . && break
  check_guests "while starting"
  sleep 0.1
done
vm_boot "$work/worker-1.cpio" "$out/worker.log" \
  -netdev "socket,id=link,connect=127.0.0.1:$link" -device virtio-net-pci,netdev=link,mac=52:54:00:56:00:11,romfile=
pids+=("$vm_pid")
t_boot=$(vm_ms)

# 6. The admin kubeconfig from the control plane's console, pointed at the forwarded port.
begin='===== skiff-vm kubeconfig begin' end='===== skiff-vm kubeconfig end'
until vm_console_text "$out/cp.log" | grep -q "$end"; do
  check_guests "before the cluster was up"
  kill -0 "$reader" 2>/dev/null || { log "stdin closed before the cluster was up"; exit 1; }
  if cat "$out/cp.log" "$out/worker.log" 2>/dev/null | grep -aq "$failed"; then
    log "provisioning failed; consoles: $out/cp.log $out/worker.log"
    exit 1
  fi
  sleep 0.5
done
vm_console_text "$out/cp.log" | awk -v b="$begin" -v e="$end" \
  'index($0, e) { exit } on { print } index($0, b) { on = 1 }' |
  sed "s#server: https://.*#server: https://127.0.0.1:$api#" >"$out/kubeconfig"
chmod 600 "$out/kubeconfig"
rm -f "$work/cp.cpio" "$work/worker-1.cpio" # long read by now
t_cp=$(vm_ms)
log "timing: kernel+base $(vm_secs $((t_base - t0))) s ($vm_base_state), payload $(vm_secs $((t_payload - t_base))) s," \
  "archives $(vm_secs $((t_archives - t_payload))) s, control plane up $(vm_secs $((t_cp - t_boot))) s after boot;" \
  "$(du -h "$work" | tail -n 1 | cut -f1) in the temp dir"
echo "ready kubeconfig=$out/kubeconfig ca-cert-hash=$hash"

# 7. Until the caller closes stdin (or a guest stops).
while kill -0 "$reader" 2>/dev/null; do
  check_guests "while the cluster was up"
  sleep 1
done
log "stdin closed: stopping the guests"
