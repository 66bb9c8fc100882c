#!/bin/sh
# Provisions one skiff node: installs the skiff binary, imports the busybox test image, writes
# the node's configuration and starts it — the control plane (`skiff up`: API server, node
# service, controllers and this machine's kubelet in one process) or a worker kubelet that
# joins with a join token and the CA's hash. Under systemd the daemon is a unit
# (contrib/systemd/skiff-up.service or skiff-kubelet.service, with a drop-in that takes the
# arguments from /etc/skiff/ROLE.env); otherwise (the QEMU test guests, busybox init) a background process in
# a cgroup of its own, restarted when it exits. Idempotent: provisioning again installs a
# changed binary, rewrites the configuration and restarts the daemon; pods keep running.
# POSIX sh (Debian's dash, busybox ash).
#
#   provision.sh controlplane --address IP --token TOKEN [--ca-cert FILE --ca-key FILE]
#                [--kubeconfig-out FILE] [common options]
#   provision.sh worker --address IP --token TOKEN --api-server IP --ca-cert-hash sha256:HEX
#                [common options]
#
# Common options:
#   --address IP       this node's address on the cluster network (required)
#   --token TOKEN      the join token, made in advance (`[a-z0-9]{6}.[a-z0-9]{16}`; required)
#   --node-name NAME   default: the host name
#   --binary FILE      the skiff binary to install (default: $SKIFF_BINARY, else skiff on PATH)
#   --image DIR        an OCI layout to import as skiff.test/busybox:latest (default: built
#                      with tests/image/mkimage.py when python3 and busybox-static are there)
#   --data-dir DIR     default /var/lib/skiff/cluster (control plane), /var/lib/skiff (worker);
#                      the node's images and pods are in DIR/node
#   --init systemd|background   default: systemd when it is PID 1
#   --wait SECS        how long to wait for the node to be up (default 300; 0: do not wait)
# Control plane: --ca-cert/--ca-key install the cluster CA made in advance (so its hash is
# known before any machine starts); without them skiff makes one and prints its hash.
# --kubeconfig-out writes the admin kubeconfig there, pointing at https://ADDRESS:6443.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
role=${1:-}
[ $# -gt 0 ] && shift
address= token= node_name= binary=${SKIFF_BINARY:-} image= data_dir= init=
wait_secs=300 ca_cert= ca_key= kubeconfig_out= api_server= ca_hash=

die() {
  echo "provision.sh: $*" >&2
  exit 1
}
say() { echo "provision.sh: $*"; }
usage() { sed -n '10,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case $role in
  controlplane | worker) ;;
  *) usage ;;
esac
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case $1 in
    --address) address=$2 ;;
    --token) token=$2 ;;
    --node-name) node_name=$2 ;;
    --binary) binary=$2 ;;
    --image) image=$2 ;;
    --data-dir) data_dir=$2 ;;
    --init) init=$2 ;;
    --wait) wait_secs=$2 ;;
    --ca-cert) ca_cert=$2 ;;
    --ca-key) ca_key=$2 ;;
    --kubeconfig-out) kubeconfig_out=$2 ;;
    --api-server) api_server=$2 ;;
    --ca-cert-hash) ca_hash=$2 ;;
    *) usage ;;
  esac
  shift 2
done

[ "$(id -u)" = 0 ] || die "run me as root"
[ -n "$address" ] || die "--address is required"
printf '%s\n' "$token" | grep -Eq '^[a-z0-9]{6}\.[a-z0-9]{16}$' ||
  die "--token must be 6 and 16 characters of [a-z0-9] joined by a dot"
if [ "$role" = worker ]; then
  [ -n "$api_server" ] || die "a worker needs --api-server"
  printf '%s\n' "$ca_hash" | grep -Eq '^sha256:[0-9a-fA-F]{64}$' ||
    die "a worker needs --ca-cert-hash sha256:<64 hex digits>"
fi
if [ -n "$ca_cert$ca_key" ] && { [ -z "$ca_cert" ] || [ -z "$ca_key" ]; }; then
  die "--ca-cert and --ca-key go together"
fi
[ -n "$node_name" ] || node_name=$(hostname)
if [ -z "$data_dir" ]; then
  # As scripts/up and the units in contrib/systemd lay it out.
  if [ "$role" = controlplane ]; then data_dir=/var/lib/skiff/cluster; else data_dir=/var/lib/skiff; fi
fi
if [ -z "$init" ]; then
  if [ -d /run/systemd/system ]; then init=systemd; else init=background; fi
fi
node_root=$data_dir/node
unit=skiff-up # the control plane and this machine's kubelet, in one process
[ "$role" = worker ] && unit=skiff-kubelet

# 1. The binary (and skiff-setup beside it, when built: the small container setup helper).
if [ -z "$binary" ]; then binary=$(command -v skiff || true); fi
[ -n "$binary" ] && [ -x "$binary" ] || die "no skiff binary: give --binary or set SKIFF_BINARY"
install_bin() { # SRC DEST: replaced by rename, so a running daemon keeps its old file
  if ! cmp -s "$1" "$2" 2>/dev/null; then
    mkdir -p "$(dirname "$2")"
    { cp "$1" "$2.new" && chmod 0755 "$2.new" && mv -f "$2.new" "$2"; } ||
      { rm -f "$2.new"; die "cannot install $2"; }
    say "installed $2"
  fi
}
install_bin "$binary" /usr/local/bin/skiff
setup=$(dirname "$binary")/skiff-setup
[ -x "$setup" ] && install_bin "$setup" /usr/local/bin/skiff-setup
skiff=/usr/local/bin/skiff

# 2. The busybox test image, in the node's image store.
mkdir -p "$node_root"
if ! "$skiff" --root "$node_root" image inspect skiff.test/busybox:latest >/dev/null 2>&1; then
  tmp_image=
  if [ -z "$image" ]; then
    command -v python3 >/dev/null && [ -x /bin/busybox ] ||
      die "no --image, and cannot build one (needs python3 and busybox-static)"
    tmp_image=$(mktemp -d)
    python3 "$repo/tests/image/mkimage.py" "$tmp_image/busybox" --variant single >/dev/null
    image=$tmp_image/busybox
  fi
  out=$("$skiff" --root "$node_root" image import "$image" --name skiff.test/busybox:latest 2>&1) ||
    die "importing $image: $out"
  [ -n "$tmp_image" ] && rm -rf "$tmp_image"
  say "imported skiff.test/busybox:latest"
fi

# 3. The configuration: the daemon's arguments and the join token (an environment file,
# mode 0600, read by the systemd unit or the background loop below).
mkdir -p /etc/skiff
if [ "$role" = controlplane ]; then
  if [ -n "$ca_cert" ]; then
    mkdir -p "$data_dir/pki"
    if [ -e "$data_dir/pki/ca.crt" ]; then
      cmp -s "$ca_cert" "$data_dir/pki/ca.crt" || die "$data_dir/pki already holds another CA"
    else
      (umask 077 && cp "$ca_key" "$data_dir/pki/ca.key" && cp "$ca_cert" "$data_dir/pki/ca.crt")
      say "installed the cluster CA"
    fi
  fi
  args="up --data-dir $data_dir --listen 0.0.0.0:6443 --node-listen 0.0.0.0:6444"
  args="$args --tls-san $address --node-name $node_name --node-ip $address"
else
  args="--root $node_root kubelet --api-server https://$api_server:6443"
  args="$args --server https://$api_server:6444 --ca-cert-hash $ca_hash"
  args="$args --node-name $node_name --node-ip $address"
fi
env_file=/etc/skiff/$role.env
(umask 077 && printf 'SKIFF_ARGS="%s"\nSKIFF_JOIN_TOKEN=%s\n' "$args" "$token" >"$env_file.new")
mv -f "$env_file.new" "$env_file"

# 4. Start (or restart) the daemon.
ready_file=$node_root/pki/node.crt # the node joined
if [ "$role" = controlplane ]; then
  ready_file=$data_dir/ca-cert-hash # written by each start, once the API server listens
fi
rm -f "$data_dir/ca-cert-hash"
if [ "$init" = systemd ]; then
  install -m 0644 "$repo/contrib/systemd/$unit.service" "/etc/systemd/system/$unit.service"
  # The unit as shipped, its arguments and environment from our file.
  mkdir -p "/etc/systemd/system/$unit.service.d"
  printf '%s\n' "# Written by vagrant/provision.sh." "[Service]" "EnvironmentFile=" \
    "EnvironmentFile=$env_file" "ExecStart=" "ExecStart=/usr/local/bin/skiff \$SKIFF_ARGS" \
    >"/etc/systemd/system/$unit.service.d/provision.conf"
  [ "$unit" = skiff-up ] && mkdir -p /var/lib/skiff/cluster # where the unit appends its log
  systemctl daemon-reload
  systemctl enable "$unit.service" >/dev/null 2>&1
  systemctl restart "$unit.service"
  say "started $unit.service"
else
  # No service manager: a restart loop in the background; each run of the daemon starts in
  # /sys/fs/cgroup/$unit alone (as a systemd unit would), then moves into its leaf.
  cg=/sys/fs/cgroup/$unit
  pid_file=/run/$unit.pid
  if [ -s "$pid_file" ]; then
    kill "$(cat "$pid_file")" 2>/dev/null || true
    for p in $(cat "$cg/cgroup.procs" "$cg/skiff/cgroup.procs" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    i=0
    while [ -n "$(cat "$cg/cgroup.procs" "$cg/skiff/cgroup.procs" 2>/dev/null)" ] && [ $i -lt 100 ]; do
      sleep 0.1
      i=$((i + 1))
    done
  fi
  mkdir -p "$cg" /var/log
  log=/var/log/$unit.log
  : >>"$log"
  (
    set +e -a # the loop outlives failures of the daemon
    . "$env_file"
    set +a
    trap 'exit 0' TERM
    while :; do
      # shellcheck disable=SC2086 # SKIFF_ARGS is a word list, as systemd splits it
      sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$skiff" $SKIFF_ARGS
      echo "provision.sh: $unit exited ($?); restarting in 2 s"
      sleep 2
    done
  ) >>"$log" 2>&1 </dev/null &
  echo $! >"$pid_file"
  say "started $unit in the background (log $log)"
fi

# 5. Wait until it is up and say how to use it.
i=0
while [ ! -s "$ready_file" ]; do
  [ "$wait_secs" = 0 ] && break
  [ $i -ge $((wait_secs * 2)) ] && die "$unit is not up after $wait_secs s (see its log)"
  sleep 0.5
  i=$((i + 1))
done
if [ "$role" = controlplane ] && [ -s "$ready_file" ]; then
  say "ca-cert-hash $(cat "$ready_file")"
  say "join a worker: provision.sh worker --address IP --token TOKEN --api-server $address" \
    "--ca-cert-hash $(cat "$ready_file")"
  if [ -n "$kubeconfig_out" ]; then
    mkdir -p "$(dirname "$kubeconfig_out")"
    (umask 077 && sed "s#server: https://.*#server: https://$address:6443#" \
      "$data_dir/kubeconfig" >"$kubeconfig_out")
    say "admin kubeconfig: $kubeconfig_out"
  fi
elif [ -s "$ready_file" ]; then
  say "node $node_name joined https://$api_server:6443"
fi
