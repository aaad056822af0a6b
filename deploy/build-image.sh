#!/usr/bin/env bash
# Builds the node image `weft:dev` (override with IMAGE=name:tag): a release build of the
# `orderer` and `peer` binaries on `FROM scratch`, with exactly the shared libraries `ldd`
# lists plus the dynamic loader, an /etc/passwd naming user 10001, /etc/nsswitch.conf
# (hosts: files dns), and /var/lib/weft (the data dir, a volume) owned by 10001.
#
# No registry is needed: nothing is pulled. Name resolution: glibc >= 2.34 carries the `files`
# and `dns` NSS modules inside libc.so.6, so getaddrinfo() resolves service names with
# /etc/hosts and /etc/resolv.conf, which Docker and Kubernetes mount into every container.
#
#   deploy/build-image.sh            # build, print the size
#   SKIP_CARGO=1 deploy/build-image.sh   # reuse the binaries already in $CARGO_TARGET_DIR/release
#   PROFILE=debug deploy/build-image.sh  # from a debug build (CI: saves a cold release build)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-weft:dev}"
TARGET="${CARGO_TARGET_DIR:-target}"
UID_GID=10001
PROFILE="${PROFILE:-release}"

docker info >/dev/null 2>&1 || { echo "build-image: no Docker engine answers (docker info failed)" >&2; exit 1; }

if [[ -z "${SKIP_CARGO:-}" ]]; then
  if [[ "$PROFILE" == release ]]; then
    cargo build --release -p orderer -p peer --bin orderer --bin peer
  else
    cargo build -p orderer -p peer --bin orderer --bin peer
  fi
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$ctx/data"

for bin in orderer peer; do
  # Debug info stays in the build dir; the image carries stripped binaries.
  objcopy --strip-debug "$TARGET/$PROFILE/$bin" "$root/usr/local/bin/$bin"
done

# Every library the binaries load, at the path the loader looks for it, and the loader.
libs="$(for bin in orderer peer; do ldd "$root/usr/local/bin/$bin"; done |
  awk '/=> \// { print $3 } /^\s*\/.*ld-linux/ { print $1 }' | sort -u)"
if ldd "$root/usr/local/bin/orderer" | grep -q "not found"; then
  echo "build-image: a library is missing:" >&2; ldd "$root/usr/local/bin/orderer" >&2; exit 1
fi
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# The loader is also reached through /lib64 on x86_64.
if [[ -e /lib64/ld-linux-x86-64.so.2 && ! -e "$root/lib64/ld-linux-x86-64.so.2" ]]; then
  mkdir -p "$root/lib64"
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/:/sbin/nologin
weft:x:$UID_GID:$UID_GID:weft:/var/lib/weft:/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
weft:x:$UID_GID:
EOF
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=$UID_GID:$UID_GID data/ /var/lib/weft/
ENV PATH=/usr/local/bin MALLOC_ARENA_MAX=2
USER $UID_GID:$UID_GID
WORKDIR /var/lib/weft
VOLUME ["/var/lib/weft"]
LABEL org.opencontainers.image.title="weft" \\
      org.opencontainers.image.description="Weft orderer and peer (run: orderer start --config F | peer start --config F)"
CMD ["orderer", "--help"]
EOF

echo "image contents:"
(cd "$root" && find . -type f -printf '  /%P  %s bytes\n' | sort)
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>"$ctx/build.err" || { cat "$ctx/build.err" >&2; exit 1; }

size="$(docker image inspect "$IMAGE" --format '{{.Size}}')"
user="$(docker image inspect "$IMAGE" --format '{{.Config.User}}')"
printf 'built %s: %s bytes (%s MiB), user %s\n' "$IMAGE" "$size" "$((size / 1048576))" "$user"
