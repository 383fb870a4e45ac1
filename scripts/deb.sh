#!/usr/bin/env bash
# `make deb`: build the Debian package certbot-dane_<version>_all.deb with Debian's own tools (debhelper,
# dh-python/pybuild, dpkg-buildpackage) from a copy of the working tree (tracked and untracked files, not
# the ignored ones), so that the build leaves nothing in the tree. Installs missing build dependencies
# (root, apt-get). Writes the .deb into OUT_DIR (default build/deb) and prints its path last.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build/deb}")

BUILD_DEPENDS=(debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev)
missing=()
for pkg in "${BUILD_DEPENDS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "deb: installing build dependencies: ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/certbot-dane-$version"
mkdir "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
        [ -e "$file" ] && cp -a --parents "$file" "$src/"   # skip files deleted in the tree but not in the index
    done
else  # an unpacked tarball
    tar --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$src"
fi
# Debian's own python3 only: no pyenv shim, virtualenv or PYTHONPATH of the caller's
(cd "$src" && env -u PYTHONPATH -u VIRTUAL_ENV -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    dpkg-buildpackage --build=binary --no-sign >"$work/build.log" 2>&1) || {
    tail -n 40 "$work/build.log" >&2
    echo "deb: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
mkdir -p "$out"
deb="$out/certbot-dane_${version}_all.deb"
mv "$work/certbot-dane_${version}_all.deb" "$deb"
echo "$deb"
