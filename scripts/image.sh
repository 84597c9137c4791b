#!/usr/bin/env bash
# Builds the Weir container image with podman, pulling nothing: a static musl binary (built
# here unless --binary names one) in a scratch image (deploy/container/Containerfile).
#
# Usage: ./scripts/image.sh [--binary PATH] [--tag NAME:TAG]
#   --binary PATH  put this binary in the image instead of building one; a dynamically linked
#                  one (the tests' debug build) gets its shared libraries copied beside it
#   --tag          the image name (default weir:VERSION, the name deploy/k8s and the chart use)
# Prints the image's name and size. Needs podman (Debian: apt-get install podman runc); the
# musl build needs musl-tools and `rustup target add x86_64-unknown-linux-musl`.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
binary="" tag="weir:$version"
while (($#)); do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
command -v podman >/dev/null || { echo "podman is needed: apt-get install podman runc" >&2; exit 1; }
if [ -z "$binary" ]; then
  command -v musl-gcc >/dev/null || { echo "musl-gcc is needed: apt-get install musl-tools" >&2; exit 1; }
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl
  echo "building the static binary (cargo build --profile image --target x86_64-unknown-linux-musl)" >&2
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --profile image \
    --target x86_64-unknown-linux-musl -p weir --features etcd
  binary=target/x86_64-unknown-linux-musl/image/weir
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/weir"
# Stripped: symbols and debug info are most of a binary's size and none of its work.
strip --strip-all -o "$root/usr/local/bin/weir" "$binary"
# A dynamically linked binary needs its loader and libraries at the same paths.
for lib in $(ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
echo 'weir:x:65532:65532:weir:/:/sbin/nologin' > "$root/etc/passwd"
echo 'weir:x:65532:' > "$root/etc/group"
podman build --quiet -f deploy/container/Containerfile -t "$tag" "$ctx" >/dev/null
size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "$tag $size bytes ($(numfmt --to=iec-i --suffix=B "$size"))"
