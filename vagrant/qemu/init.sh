#!/bin/sh
# PID 1 of the skiff test guest (busybox sh). Mounts the API filesystems, loads the modules the
# runner listed, mounts cgroup2 at /sys/fs/cgroup with every controller enabled for children,
# runs the job alone in the child cgroup /sys/fs/cgroup/$SKIFF_CGROUP (not the root: the same
# rules as on a real node), prints the job's exit code in a delimited block and powers off.
# run.sh and cluster.sh write /skiff/job.env and /skiff/job.sh (`exec CMD`). job.env sets
#   SKIFF_CGROUP      the job's cgroup below the root
#   SKIFF_MODPROBE    modules to load at boot
#   SKIFF_TMPFS_ROOT  1: first move everything to a tmpfs and switch_root there (pivot_root,
#                     which containers need, cannot leave the initramfs' rootfs)
#   SKIFF_HOSTNAME    the guest's host name
#   SKIFF_NET         `IFACE=ADDR/PREFIX ...`: addresses of the guest's interfaces
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. /skiff/job.env

if [ "${SKIFF_TMPFS_ROOT:-0}" = 1 ] && [ ! -e /.skiff-tmpfs-root ]; then
  # Moved tree by tree, so the guest never holds two copies of the payload; a busybox of
  # its own does the moving (/bin goes along).
  mkdir -p /newroot
  mount -t tmpfs -o mode=0755,size=90% tmpfs /newroot
  mkdir -p /newroot/.init
  bb=/newroot/.init/busybox # busybox picks the applet by argv[0] unless that is `busybox`
  cp /bin/busybox "$bb"
  for e in /* /.[!.]*; do
    [ -e "$e" ] || continue
    case $e in
      /newroot | /proc | /sys | /dev | /.init) "$bb" mkdir -p "/newroot$e" ;;
      /init) "$bb" cp -a /init /newroot/init ;; # switch_root checks the old one is there
      *) "$bb" mv "$e" /newroot/ ;;
    esac
  done
  "$bb" touch /newroot/.skiff-tmpfs-root
  exec "$bb" switch_root /newroot /init
fi

rm -rf /.init
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

fail() {
  echo "===== skiff-vm init failed: $* ====="
  poweroff -f
}

for m in $SKIFF_MODPROBE; do modprobe "$m" || echo "init: modprobe $m failed"; done
[ -n "${SKIFF_HOSTNAME:-}" ] && hostname "$SKIFF_HOSTNAME"
ip link set lo up
for spec in ${SKIFF_NET:-}; do
  ip link set "${spec%%=*}" up && ip addr add "${spec#*=}" dev "${spec%%=*}" || fail "address $spec"
done
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
mount -t bpf bpf /sys/fs/bpf || echo "init: no bpffs"
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || echo "init: cannot enable $c"
done
cg=/sys/fs/cgroup/$SKIFF_CGROUP
mkdir -p "$cg" || fail "mkdir $cg"
echo "init: kernel $(uname -r), cgroup2 subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)," \
  "job cgroup /$SKIFF_CGROUP"

echo "===== skiff-vm job begin (uptime $(cut -d' ' -f1 /proc/uptime)) ====="
# The job joins its cgroup first and then replaces this shell: it is the cgroup's only process.
SKIFF_CG="$cg" sh -c 'echo $$ >"$SKIFF_CG/cgroup.procs" && cd /skiff && exec sh /skiff/job.sh' </dev/null 2>&1
rc=$?
echo "===== skiff-vm job end: exit $rc (uptime $(cut -d' ' -f1 /proc/uptime)) ====="
poweroff -f
