#!/usr/bin/env bash
# Fetches the Debian kernel that `linux-image-amd64` depends on into the cache, once per machine
# and kernel version: `apt-get download` + `dpkg -x` (nothing is installed into the machine),
# `busybox depmod` (the machine has no kmod), and an uncompressed `vmlinux` that QEMU boots
# directly (PVH), which halves the boot under TCG (no emulated decompression). Prints the
# kernel tree's directory: boot/vmlinuz-$KV, vmlinux (if extracted) and lib/modules/$KV.
#
#   SKIFF_VM_CACHE       cache directory (default /var/cache/skiff-vm)
#   SKIFF_VM_KERNEL_PKG  a specific package, e.g. linux-image-6.1.0-56-amd64
set -euo pipefail

cache=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
mkdir -p "$cache"

# `apt-cache depends` takes seconds here (no pkgcache.bin), so the answer is remembered for as
# long as the package lists are unchanged.
kernel_pkg() {
  local lists memo=$cache/kernel-pkg
  lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -printf '%T@ %s\n' 2>/dev/null | sort | sha256sum)
  if [ -s "$memo" ] && [ "$(head -n 1 "$memo")" = "$lists" ]; then
    sed -n 2p "$memo"
    return
  fi
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$pkg" ] && printf '%s\n%s\n' "$lists" "$pkg" >"$memo"
  echo "$pkg"
}

pkg=${SKIFF_VM_KERNEL_PKG:-$(kernel_pkg)}
if [ -z "$pkg" ]; then
  # No package lists yet (fresh machine): fetch them once. Offline with a cached kernel: use it.
  if ! apt-get update -qq >&2; then
    newest=$(ls -d "$cache"/kernel-*/.ready 2>/dev/null | sort -V | tail -n 1)
    [ -n "$newest" ] && { dirname "$newest"; exit 0; }
  fi
  pkg=$(kernel_pkg)
fi
[ -n "$pkg" ] || { echo "kernel.sh: cannot tell which kernel linux-image-amd64 depends on" >&2; exit 1; }
kv=${pkg#linux-image-}
dir=$cache/kernel-$kv

if [ ! -e "$dir/.ready" ]; then
  exec 9>"$cache/.lock"
  flock 9 # another run may be fetching the same kernel
  if [ ! -e "$dir/.ready" ]; then
    tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    start=$SECONDS
    (cd "$tmp" && apt-get download -q=2 -o APT::Sandbox::User=root "$pkg" >&2)
    deb=$(ls "$tmp"/*.deb)
    dpkg -x "$deb" "$tmp/root"
    busybox depmod -b "$tmp/root" "$kv"
    [ -s "$tmp/root/lib/modules/$kv/modules.dep" ] || { echo "kernel.sh: depmod wrote no modules.dep" >&2; exit 1; }
    # The bzImage carries the kernel as an xz stream; unpacked, it is an ELF with a PVH note.
    vmlinuz=$tmp/root/boot/vmlinuz-$kv
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
    if [ -n "$off" ] && command -v xz >/dev/null; then
      # xz stops at the end of its stream and complains about what follows: expected.
      tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$tmp/root/vmlinux" 2>/dev/null || true
      [ "$(head -c 4 "$tmp/root/vmlinux" | od -An -c | tr -d ' ')" = 177ELF ] || rm -f "$tmp/root/vmlinux"
    fi
    echo "kernel.sh: fetched $pkg ($(du -h "$deb" | cut -f1) .deb, $(du -sh "$tmp/root" | cut -f1) unpacked)" \
      "in $((SECONDS - start)) s into $dir" >&2
    rm -rf "$dir" "$deb"
    mv "$tmp/root" "$dir"
    touch "$dir/.ready"
  fi
fi
echo "$dir"
