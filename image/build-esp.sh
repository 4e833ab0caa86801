#!/usr/bin/env bash
# Assemble the bootable disk without mounting anything (the build host's kernel may have no vfat):
#   1. a unified kernel image (UKI): systemd's EFI stub + os-release + command line + kernel +
#      initrd, put together with objcopy;
#   2. a FAT32 ESP image made with mtools (mformat/mmd/mcopy) holding systemd-boot and the UKI;
#   3. a new GPT disk (sfdisk): partition 1 the ESP, partition 2 mkosi's root partition, copied
#      with dd and keeping its PARTUUID, which the UKI's command line names;
#   4. the zstd-compressed disk and a sha256 checksum file.
# Usage: image/build-esp.sh BOOTDIR ROOT_RAW DISK
#   Environment: EXTRA_CMDLINE (appended to the kernel command line, e.g. for debugging),
#   ESP_MIB (128), ZSTD_LEVEL (6), NO_COMPRESS=1 (skip step 4, for development).
#   BOOTDIR holds vmlinuz, initrd.img, os-release, kernel-version (from image/mkosi.finalize).
set -euo pipefail
boot=${1:?usage: build-esp.sh BOOTDIR ROOT_RAW DISK}
root_raw=${2:?}
disk=${3:?}
work=$(dirname "$boot")/esp
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
SDBOOT=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
ESP_MIB=${ESP_MIB:-128}
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709   # root, x86-64 (Discoverable Partitions)
say() { echo "   build-esp: $*"; }
for f in "$STUB" "$SDBOOT"; do test -f "$f" || { echo "build-esp: $f missing (apt-get install systemd-boot-efi)" >&2; exit 1; }; done
rm -rf "$work"; mkdir -p "$work"

# ---- the root partition of mkosi's image: where it is, and its PARTUUID ----------------------
read -r root_start root_size root_uuid < <(sfdisk -J "$root_raw" | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
root = [p for p in parts if p["type"].upper() == "'"$ROOT_TYPE"'"]
assert len(root) == 1, f"expected one x86-64 root partition, found {parts}"
print(root[0]["start"], root[0]["size"], root[0]["uuid"])')
say "root partition: ${root_size} sectors at ${root_start}, PARTUUID $root_uuid"

# ---- 1. the unified kernel image ------------------------------------------------------------
kver=$(cat "$boot/kernel-version")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml 2>/dev/null | head -n 1)
# The console is on the screen and on the serial line; the last console= is /dev/console, where
# systemd's status and mxknock-announce.service's readiness line go. net.ifnames=0: the NICs are
# eth0 (outside) and eth1 (inside), the config's defaults. quiet: the console owns the terminals.
cmdline="root=PARTUUID=${root_uuid,,} rw rootwait console=tty1 console=ttyS0,115200n8 net.ifnames=0 quiet loglevel=3 systemd.show_status=auto rd.udev.log_level=3 panic=10${EXTRA_CMDLINE:+ $EXTRA_CMDLINE}"
printf '%s' "$cmdline" >"$work/cmdline"
{
    grep -v -E '^(PRETTY_NAME|IMAGE_ID|IMAGE_VERSION)=' "$boot/os-release"
    echo "PRETTY_NAME=\"mxknock ${version:-appliance} (Debian 12, kernel $kver)\""
    echo "IMAGE_ID=mxknock"
    echo "IMAGE_VERSION=${version:-0}"
} >"$work/os-release"
uki=$work/mxknock.efi
# Each section goes after the stub's last one, aligned to the stub's section alignment.
align=$(( 16#$(objdump -p "$STUB" | awk '/^SectionAlignment/ {print $2}') ))
end=$(objdump -h "$STUB" | awk 'NF == 7 && $1 ~ /^[0-9]+$/ {print $3, $4}' | while read -r size vma; do
    echo $(( 16#$vma + 16#$size )); done | sort -n | tail -n 1)
next() { echo $(( ($1 + align - 1) / align * align )); }
osrel=$(next "$end")
cmd=$(next $(( osrel + $(stat -Lc%s "$work/os-release") )))
linux=$(next $(( cmd + $(stat -Lc%s "$work/cmdline") )))
initrd=$(next $(( linux + $(stat -Lc%s "$boot/vmlinuz") )))
objcopy \
    --add-section .osrel="$work/os-release" --change-section-vma .osrel="$(printf 0x%x "$osrel")" \
    --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline="$(printf 0x%x "$cmd")" \
    --add-section .linux="$boot/vmlinuz" --change-section-vma .linux="$(printf 0x%x "$linux")" \
    --add-section .initrd="$boot/initrd.img" --change-section-vma .initrd="$(printf 0x%x "$initrd")" \
    "$STUB" "$uki"
say "unified kernel image: $(du -h "$uki" | cut -f1), kernel $kver, cmdline: $cmdline"

# ---- 2. the ESP, as a FAT32 file system image -----------------------------------------------
esp=$work/esp.img
uki_size=$(stat -c%s "$uki")
if [ $(( uki_size + 4 * 1024 * 1024 )) -gt $(( ESP_MIB * 1024 * 1024 )) ]; then
    echo "build-esp: the UKI ($uki_size bytes) does not fit a ${ESP_MIB} MiB ESP: set ESP_MIB" >&2; exit 1
fi
truncate -s "${ESP_MIB}M" "$esp"
mformat -i "$esp" -F -v ESP -T $(( ESP_MIB * 2048 )) -h 64 -s 32 ::
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/Linux ::/loader ::/loader/entries
cat >"$work/loader.conf" <<CONF
# systemd-boot: boots the newest unified kernel image in /EFI/Linux; hold a key for the menu.
timeout 0
default mxknock*
editor no
console-mode keep
CONF
mcopy -i "$esp" "$SDBOOT" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$SDBOOT" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$uki" "::/EFI/Linux/mxknock-${version:-0}-${kver}.efi"
say "ESP: ${ESP_MIB} MiB FAT32: $(mdir -i "$esp" -/ -b :: | tr '\n' ' ')"

# ---- 3. the disk: GPT with the ESP and the root partition -----------------------------------
esp_start=2048
esp_sectors=$(( ESP_MIB * 2048 ))
new_root_start=$(( esp_start + esp_sectors ))
total=$(( new_root_start + root_size + 2048 ))   # + room for the backup GPT, MiB-aligned
tmp=$disk.tmp
rm -f "$tmp"
truncate -s $(( total * 512 )) "$tmp"
sfdisk --quiet "$tmp" <<TABLE
label: gpt
start=$esp_start, size=$esp_sectors, type=$ESP_TYPE, name="ESP"
start=$new_root_start, size=$root_size, type=$ROOT_TYPE, uuid=$root_uuid, name="root-x86-64"
TABLE
dd if="$esp" of="$tmp" bs=1M seek=$(( esp_start * 512 )) oflag=seek_bytes conv=notrunc,sparse status=none
dd if="$root_raw" of="$tmp" bs=64K skip=$(( root_start * 512 )) iflag=skip_bytes,count_bytes \
    count=$(( root_size * 512 )) seek=$(( new_root_start * 512 )) oflag=seek_bytes conv=notrunc,sparse status=none
mv "$tmp" "$disk"
say "disk: $disk, $(( total * 512 / 1024 / 1024 )) MiB (ESP + root), $(du -h "$disk" | cut -f1) allocated"
sfdisk --list "$disk" | sed -n '/^Device/,$p' | sed 's/^/      /'

# ---- 4. compressed copy and checksums ---------------------------------------------------------
if [ -n "${NO_COMPRESS:-}" ]; then say "NO_COMPRESS set: no .zst, no checksums"; exit 0; fi
say "compressing with zstd (level ${ZSTD_LEVEL:-6}) and checksumming"
name=$(basename "$disk")
# The checksum of the raw disk is computed while zstd compresses it.
zstd -q -f -T0 -"${ZSTD_LEVEL:-6}" "$disk" -o "$disk.zst" &
zpid=$!
raw_sum=$(sha256sum <"$disk" | cut -d' ' -f1)
wait "$zpid"
zst_sum=$(sha256sum "$disk.zst" | cut -d' ' -f1)
printf '%s  %s\n%s  %s\n' "$raw_sum" "$name" "$zst_sum" "$name.zst" >"$disk.sha256"
say "$name.zst: $(du -h "$disk.zst" | cut -f1); checksums in $disk.sha256"
