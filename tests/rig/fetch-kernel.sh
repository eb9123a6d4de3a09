#!/bin/bash
# Fetch a Debian trixie-backports kernel (>= 6.15: scsi_debug tape emulation) for the tape rig.
#
# Downloads linux-binary-$KV and linux-modules-$KV with `apt-get download` through a private apt
# state (its own sources, lists and cache under $CACHE/apt), so the host's apt sources, lists and
# pinning are untouched; nothing is installed. Unpacks with dpkg-deb -x and keeps only vmlinuz,
# the kernel config and the modules the rig loads, under $CACHE/kernel/$KV, with
# $CACHE/kernel/current pointing at it. A second run finds the cache and does not touch the
# network.
#
# Environment: TAPEARC_RIG_CACHE (default /var/cache/tapearc-rig), TAPEARC_RIG_KV (kernel ABI
# name, e.g. 7.3.4+deb13-amd64; default: what linux-image-amd64 in trixie-backports depends on),
# TAPEARC_RIG_MIRROR (default: the URI of the host's Debian entry, else http://deb.debian.org/debian).
set -euo pipefail

CACHE=${TAPEARC_RIG_CACHE:-/var/cache/tapearc-rig}
FLAVOUR=amd64   # the amd64 flavour has 9p (the guest reads the host's / over virtio-9p); cloud-amd64 has not
SUITE=trixie-backports
# Modules the guest loads (their dependencies are added from the modules' own metadata).
ROOTS="st scsi_debug 9p 9pnet_virtio"

log() { echo "fetch-kernel: $*" >&2; }
die() { echo "fetch-kernel: error: $*" >&2; exit 1; }

if [ -f "$CACHE/kernel/current/vmlinuz" ] && [ -f "$CACHE/kernel/current/modules/order" ] \
   && [ -z "${TAPEARC_RIG_KV:-}" ]; then
  log "cached: $(cat "$CACHE/kernel/current/KV") in $(readlink -f "$CACHE/kernel/current")"
  exit 0
fi
if [ -n "${TAPEARC_RIG_KV:-}" ] && [ -f "$CACHE/kernel/$TAPEARC_RIG_KV/modules/order" ]; then
  ln -sfn "$TAPEARC_RIG_KV" "$CACHE/kernel/current"
  log "cached: $TAPEARC_RIG_KV"
  exit 0
fi
for tool in apt-get apt-cache dpkg-deb xz; do
  command -v "$tool" >/dev/null || die "$tool not found (run on Debian with apt and xz-utils)"
done

mirror() {
  # The URI of the host's main Debian entry (deb822 or one-line format), so CI uses its own mirror.
  local uri=""
  if [ -n "${TAPEARC_RIG_MIRROR:-}" ]; then echo "$TAPEARC_RIG_MIRROR"; return; fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}' | head -1)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

A="$CACHE/apt"
mkdir -p "$A/parts" "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
URI=$(mirror)
cat > "$A/parts/$SUITE.sources" <<SRC
Types: deb
URIs: $URI
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# Private apt state: only our source, our lists and our cache; the host's dpkg status is read only.
APT=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$A/parts"
     -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o APT::Sandbox::User=root
     -o Dir::Etc::preferencesparts=/dev/null -o Dir::Etc::preferences=/dev/null
     -o APT::Default-Release=)
log "apt-get update ($SUITE from $URI, private state in $A)"
apt-get "${APT[@]}" -q update >&2

KV=${TAPEARC_RIG_KV:-}
if [ -z "$KV" ]; then
  # The candidate version's dependency names the kernel ABI (linux-image-7.3.4+deb13-amd64).
  KV=$(apt-cache "${APT[@]}" depends "linux-image-$FLAVOUR" \
       | grep -o 'linux-image-[0-9][^ ,]*' | head -1 | sed 's/^linux-image-//')
  [ -n "$KV" ] || die "cannot find linux-image-$FLAVOUR in $SUITE at $URI"
fi
# Linux >= 6.15: the first release with scsi_debug's tape emulation (ptype=1).
major=${KV%%.*}; rest=${KV#*.}; minor=${rest%%[!0-9]*}
if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 15 ]; }; then
  die "kernel $KV is older than 6.15 and has no scsi_debug tape emulation; set TAPEARC_RIG_KV"
fi

log "apt-get download linux-binary-$KV linux-modules-$KV"
rm -f "$A/debs"/*.deb
(cd "$A/debs" && apt-get "${APT[@]}" -q download "linux-binary-$KV" "linux-modules-$KV" >&2)

X=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$X"' EXIT
for d in "$A/debs"/*.deb; do dpkg-deb -x "$d" "$X"; done
M="$X/usr/lib/modules/$KV"
[ -f "$M/vmlinuz" ] || M="$X/lib/modules/$KV"
VMLINUZ="$M/vmlinuz"
[ -f "$VMLINUZ" ] || VMLINUZ="$X/boot/vmlinuz-$KV"
[ -f "$VMLINUZ" ] || die "no vmlinuz in linux-binary-$KV"

# Module file, decompressed, and its dependencies (the "depends=" field of .modinfo).
modfile() { find "$M/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -1; }
unpack() {
  case "$1" in
    *.xz) xz -dc "$1" ;;
    *.zst) zstd -dc "$1" ;;
    *) cat "$1" ;;
  esac
}
depends() { unpack "$(modfile "$1")" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '; }

K="$CACHE/kernel/$KV.new"
rm -rf "$K"; mkdir -p "$K/modules"
ORDER=()
visit() {
  local m=$1 d
  for seen in "${ORDER[@]:-}"; do [ "$seen" = "$m" ] && return; done
  [ -n "$(modfile "$m")" ] || die "module $m not in linux-modules-$KV"
  for d in $(depends "$m"); do visit "$d"; done
  ORDER+=("$m")
  unpack "$(modfile "$m")" > "$K/modules/$m.ko"
}
for r in $ROOTS; do visit "$r"; done
printf '%s\n' "${ORDER[@]}" > "$K/modules/order"
cp "$VMLINUZ" "$K/vmlinuz"
[ -f "$M/config" ] && cp "$M/config" "$K/config"
echo "$KV" > "$K/KV"
(cd "$A/debs" && ls *.deb && sha256sum *.deb) > "$K/SOURCE"
rm -rf "$CACHE/kernel/$KV"; mv "$K" "$CACHE/kernel/$KV"
ln -sfn "$KV" "$CACHE/kernel/current"
rm -f "$A/debs"/*.deb
log "kernel $KV ready in $CACHE/kernel/$KV (modules: ${ORDER[*]})"
