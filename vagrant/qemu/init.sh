#!/bin/sh
# PID 1 of the skiff test guest (busybox sh). Mounts the API filesystems, loads the modules the
# runner listed, mounts cgroup2 at /sys/fs/cgroup with every controller enabled for children,
# runs the job alone in the child cgroup /sys/fs/cgroup/$SKIFF_CGROUP (not the root: the same
# rules as on a real node), prints the job's exit code in a delimited block and powers off.
# run.sh writes /skiff/job.env (SKIFF_CGROUP, SKIFF_MODPROBE) and /skiff/job.sh (`exec CMD`).
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
. /skiff/job.env

fail() {
  echo "===== skiff-vm init failed: $* ====="
  poweroff -f
}

for m in $SKIFF_MODPROBE; do modprobe "$m" || echo "init: modprobe $m failed"; done
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
