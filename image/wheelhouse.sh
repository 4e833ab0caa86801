#!/usr/bin/env bash
# Fill the wheelhouse the image installs from (mkosi.postinst: pip --no-index): the mxknock wheel
# and every dependency's, built on this host with Debian's /usr/bin/python3 (not a python3 that
# comes first on PATH), which is the image's own: bookworm's 3.11. python-iptables builds from
# source (gcc, python3-dev).
# The dependencies are rebuilt only when pyproject.toml changes; mxknock's own wheel every time.
# Usage: image/wheelhouse.sh OUTDIR   (run from the repository's top)
set -euo pipefail
out=${1:?usage: wheelhouse.sh OUTDIR}
work=build/image
venv=$work/wheel-venv
mkdir -p "$work" "$out"
if [ ! -x "$venv/bin/pip" ]; then
    echo "== wheelhouse: creating the build venv $venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip wheel 2>"$work/wheelhouse.log" || { cat "$work/wheelhouse.log" >&2; exit 1; }
fi
key=$( (sha256sum pyproject.toml; "$venv/bin/python" -VV) | sha256sum | cut -c1-16)
if [ "$(cat "$out/.deps-key" 2>/dev/null)" != "$key" ]; then
    echo "== wheelhouse: building mxknock and all its dependencies' wheels (needs PyPI)"
    rm -rf "$out"; mkdir -p "$out"
    "$venv/bin/pip" wheel --quiet --wheel-dir "$out" '.[console]' 2>"$work/wheelhouse.log" || { cat "$work/wheelhouse.log" >&2; exit 1; }
    echo "$key" >"$out/.deps-key"
else
    echo "== wheelhouse: dependencies unchanged; rebuilding the mxknock wheel only"
    rm -f "$out"/mxknock-*.whl
    "$venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$out" . 2>"$work/wheelhouse.log" || { cat "$work/wheelhouse.log" >&2; exit 1; }
fi
# What the image installs: mxknock with its console, resolved from this directory only.
echo 'mxknock[console]' >"$out/requirements.txt"
ls "$out" | sed -n 's/\.whl$//p' | sed 's/^/   /'
