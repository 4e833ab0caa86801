#!/usr/bin/env bash
# `make image`: wheelhouse -> mkosi (incremental where it can) -> ESP + disk, with progress.
# Run from the repository's top, as root. Outputs: mkosi.output/mxknock.img (+ .zst, .sha256).
set -euo pipefail
OUT=mkosi.output
WORK=build/image
ROOT_RAW=$OUT/mxknock-root.raw
DISK=$OUT/mxknock.img
CACHE=$ROOT_RAW.cache-pre-inst
start=$(date +%s)
stamp() { echo "== image [$(( $(date +%s) - start ))s] $*"; }

[ "$(id -u)" -eq 0 ] || { echo "image: run as root (mkosi needs loop devices and systemd-nspawn)" >&2; exit 1; }
mkdir -p "$OUT" "$WORK" mkosi.cache

stamp "wheelhouse"
bash image/wheelhouse.sh "$WORK/extra/var/cache/mxknock-wheels"

# mkosi 14's incremental cache notices neither Packages= nor the prepare script: key it on both.
key=$(cat mkosi.conf image/mkosi.prepare | sha256sum | cut -c1-16)
if [ -f "$CACHE" ] && [ "$(cat "$OUT/.cache-key" 2>/dev/null)" = "$key" ]; then
    stamp "mkosi, incremental (package list and image/mkosi.prepare unchanged: cache $key)"
    force=-f
else
    stamp "mkosi, cold (no cache, or the package list or image/mkosi.prepare changed)"
    rm -f "$CACHE"
    echo "$key" >"$OUT/.cache-key"
    force=-ff
fi
rm -rf "$WORK/boot"
set +e
MXKNOCK_BOOT_DIR=$WORK/boot mkosi "$force" --incremental build 2>&1 | tee "$WORK/mkosi.log" \
    | grep --line-buffered -E '^‣|^mkosi\.|^(E|W): |^[a-z-]+: error|Traceback'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ] || [ ! -f "$ROOT_RAW" ] || [ ! -f "$WORK/boot/vmlinuz" ]; then
    echo "image: mkosi failed (exit $rc); the whole log is $WORK/mkosi.log" >&2
    exit 1
fi
stamp "mkosi done: $ROOT_RAW"

stamp "ESP (systemd-boot, unified kernel image) and the bootable disk"
bash image/build-esp.sh "$WORK/boot" "$ROOT_RAW" "$DISK"
stamp "done: $DISK ($(du -h --apparent-size "$DISK" | cut -f1) raw, $(du -h "$DISK.zst" | cut -f1) compressed)"
