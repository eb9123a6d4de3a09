#!/bin/bash
# Prepare a host (CI, as root) for the real-kernel tape rig: the Debian packages it runs, and the
# trixie-backports kernel in the cache (tests/rig/fetch-kernel.sh). Idempotent: a second run
# installs nothing and downloads nothing. Run before the tests: they may run without network
# (unshare -n), so nothing is fetched from them.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# qemu-system-x86: the VM (TCG); busybox-static: the initramfs; mt-st: the real mt; cpio: packs
# the initramfs; xz-utils: unpacks the modules.
PACKAGES=(qemu-system-x86 busybox-static mt-st cpio xz-utils)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "prepare: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
"$HERE/fetch-kernel.sh"
