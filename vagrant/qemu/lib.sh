# Shared by run.sh (one guest, one command) and cluster.sh (a control-plane and a worker
# guest): the kernel, the cached base initramfs, the per-run archives, the QEMU command line
# and reading a guest's console. Sourced by bash with `set -euo pipefail`; expects `$here`
# (this directory) and `$work` (the run's temp dir).
#
#   SKIFF_VM_CACHE     cache directory (default /var/cache/skiff-vm)
#   SKIFF_VM_MODULES   modules packed into the base (the guest can `modprobe` them)
#   SKIFF_VM_TB_MIB    QEMU's translated-code cache per guest (default 256)

vm_cache=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
TB_MIB=${SKIFF_VM_TB_MIB:-256}
vm_modules=${SKIFF_VM_MODULES:-overlay veth bridge br_netfilter sch_ingress cls_bpf act_bpf ext4 virtio_pci virtio_net virtio_blk}

vm_ms() { echo $(($(date +%s%N) / 1000000)); }
vm_secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# Checks for QEMU and busybox; sets $busybox. Exits 125 (no result) without them.
vm_require() {
  command -v qemu-system-x86_64 >/dev/null ||
    { echo "$(basename "$0"): needs qemu-system-x86_64 (apt-get install qemu-system-x86)" >&2; exit 125; }
  busybox=$(command -v busybox) ||
    { echo "$(basename "$0"): needs busybox (apt-get install busybox-static)" >&2; exit 125; }
}

# Copies FILE (and, for an executable, its shared libraries) into tree ROOT, at DEST or FILE's
# path. With STRIP=1, debug info is stripped from FILE's copy (less to unpack in the guest);
# with STRIP=all, the symbol table too (a panic's backtrace then has no names).
vm_copy_in() {
  local root=$1 file=$2 dest=${3:-$2} lib
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$file" "$root$dest"
  if command -v strip >/dev/null; then
    case ${STRIP:-0} in
      1) strip --strip-debug "$root$dest" 2>/dev/null || true ;;
      all) strip --strip-all "$root$dest" 2>/dev/null || true ;;
    esac
  fi
  for lib in $(ldd "$file" 2>/dev/null | grep -oE '/[^ ]+' || true); do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"; }
  done
}

# Writes a newc cpio of tree DIR to stdout.
vm_pack() { (cd "$1" && find . | "$busybox" cpio -o -H newc 2>/dev/null); }

# Single-quotes each argument for sh.
vm_quote() { local a out=; for a in "$@"; do out+=" '${a//\'/\'\\\'\'}'"; done; echo "${out# }"; }

# The kernel (fetched once per machine and version): sets $vm_kdir, $vm_kv, $vm_kernel.
vm_kernel() {
  vm_kdir=$("$here/kernel.sh")
  vm_kv=$(basename "$(ls -d "$vm_kdir"/lib/modules/*/ | head -n 1)")
  vm_kernel=$vm_kdir/vmlinux # PVH: no emulated decompression
  [ -e "$vm_kernel" ] || vm_kernel=$vm_kdir/boot/vmlinuz-$vm_kv
}

# The base initramfs (busybox + modules with their dependencies + init.sh), cached by a hash
# of its inputs: sets $vm_base and $vm_base_state (cached or built). Needs vm_kernel first.
vm_base_initrd() {
  local key b md m line f
  key=$({ echo "$vm_kv $vm_modules"; cat "$here/init.sh" "$here/lib.sh" "$busybox"; } | sha256sum | cut -c1-16)
  vm_base=$vm_cache/initrd-base-$vm_kv-$key.cpio
  vm_base_state=cached
  if [ ! -s "$vm_base" ]; then
    vm_base_state=built
    b=$work/base
    mkdir -p "$b"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,run,etc,root,skiff}
    STRIP=0 vm_copy_in "$b" "$busybox" /bin/busybox
    for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$b/bin/$a"; done
    cp "$here/init.sh" "$b/init" && chmod 755 "$b/init"
    md=$vm_kdir/lib/modules/$vm_kv
    mkdir -p "$b/lib/modules/$vm_kv"
    cp "$md/modules.builtin" "$md/modules.order" "$b/lib/modules/$vm_kv/"
    declare -A want=()
    for m in $vm_modules; do
      line=$(grep -E "^([^: ]*/)?${m}\.ko:" "$md/modules.dep") ||
        { grep -qE "/${m}\.ko$" "$md/modules.builtin" || echo "lib.sh: no module $m" >&2; continue; }
      for f in ${line/:/}; do want[$f]=1; done
    done
    for f in "${!want[@]}"; do
      mkdir -p "$b/lib/modules/$vm_kv/$(dirname "$f")"
      cp "$md/$f" "$b/lib/modules/$vm_kv/$f"
      grep -E "^$f:" "$md/modules.dep" >>"$b/lib/modules/$vm_kv/modules.dep"
    done
    vm_pack "$b" >"$vm_base.tmp.$$" && mv "$vm_base.tmp.$$" "$vm_base"
    rm -rf "$b"
    # Bases of older inputs: dropped once unused for a week (each run touches its own).
    find "$vm_cache" -maxdepth 1 -name 'initrd-base-*.cpio' -mtime +7 -delete
  fi
  touch "$vm_base"
}

# Writes a job archive for tree DIR with `/skiff/job.sh` (exec CMD...) and `/skiff/job.env`
# (the lines of ENV, a newline-separated list of NAME=VALUE, values quoted here) to OUT.
#   vm_job_archive DIR OUT ENV -- CMD [ARG]...
vm_job_archive() {
  local dir=$1 out=$2 env=$3 line
  shift 4
  mkdir -p "$dir/skiff"
  echo "exec $(vm_quote "$@")" >"$dir/skiff/job.sh"
  : >"$dir/skiff/job.env"
  while IFS= read -r line; do
    [ -n "$line" ] && printf '%s=%s\n' "${line%%=*}" "$(vm_quote "${line#*=}")" >>"$dir/skiff/job.env"
  done <<<"$env"
  vm_pack "$dir" >"$out"
}

# Starts QEMU in the background for INITRD with console log LOG and more QEMU arguments;
# sets $vm_pid. TIMEOUT and MEM are required; QUIET=1 keeps the console off stderr. The
# translated-code cache is TB_MIB (QEMU's default, 1 GiB, fills with a big binary's code).
#   vm_boot INITRD LOG [QEMU ARG]...
vm_boot() {
  local initrd=$1 log=$2 out=2 # the console and QEMU's messages go to stderr (fd 2) …
  shift 2
  [ "${QUIET:-0}" = 1 ] && { exec {out}>/dev/null; } # … or nowhere
  timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -accel "tcg,tb-size=$TB_MIB" -m "$MEM" -smp 1 \
    -nographic -nodefaults -no-reboot \
    -chardev "stdio,id=con,signal=off,logfile=$log" -serial chardev:con \
    -kernel "$vm_kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 loglevel=1" "$@" </dev/null >&"$out" 2>&1 &
  vm_pid=$!
  [ "$out" = 2 ] || exec {out}>&-
}

# The console log LOG without carriage returns and escapes.
vm_console_text() { tr -d '\r\033' <"$1"; }

# A free TCP port on 127.0.0.1 (bound and released: another process may take it before QEMU
# does, which then fails to start and says so).
vm_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
