#!/usr/bin/env bash
# Install the build host's Debian packages for `make image` / `make vm` / `make image-test`
# (the list is image/REQUIREMENTS.txt), only those that are missing. Needs root and apt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^\s*$/d' "$here/REQUIREMENTS.txt")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "== host packages: all ${#wanted[@]} of image/REQUIREMENTS.txt are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "image: these Debian packages are missing on the build host: ${missing[*]}" >&2
    echo "image: install them (as root: apt-get install ${missing[*]}) and run make again" >&2
    exit 1
fi
echo "== host packages: installing the missing ones with apt-get: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "== host packages: installed"
