# shellcheck shell=bash
# Container images without a container engine, for scripts/build-image and
# scripts/build-e2e-images (source it): static binaries, the files a distroless base provides,
# and a one-layer OCI image-layout archive made with crane.

# The images are linux/amd64; the musl target is not installable here.
OCI_IMAGE_TARGET=x86_64-unknown-linux-gnu

# oci_static_binaries ROOT PROFILE PACKAGE...
#   Builds the packages' binaries as static executables with the cargo PROFILE and prints the
#   directory that holds them.
oci_static_binaries() {
  local root=$1 profile=$2
  shift 2
  local package packages=()
  for package in "$@"; do packages+=(-p "$package"); done
  echo "building static $profile binaries of $* for $OCI_IMAGE_TARGET" >&2
  # glibc's crt-static: since glibc 2.34 the files and dns NSS modules live in libc itself, so
  # name lookups work in a static binary.
  (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile "$profile" --locked --target "$OCI_IMAGE_TARGET" "${packages[@]}") >&2 || return
  # Cargo's output directory: CI keeps it outside the clone (CARGO_TARGET_DIR).
  echo "${CARGO_TARGET_DIR:-$root/target}/$OCI_IMAGE_TARGET/$profile"
}

# oci_crane ROOT
#   Prints the path of crane: from the control-plane build (e2e/controlplane/build.sh) unless
#   WSFLEET_CONTROLPLANE_BIN names a directory holding it.
oci_crane() {
  local bin_dir
  bin_dir=${WSFLEET_CONTROLPLANE_BIN:-$(bash "$1/e2e/controlplane/build.sh")} || return
  echo "$bin_dir/crane"
}

# oci_nonroot_files ROOTFS
#   Adds what a distroless base provides for its nonroot user: passwd and group entries naming
#   uid and gid 65532, and a world-writable sticky /tmp.
oci_nonroot_files() {
  local rootfs=$1
  mkdir -p "$rootfs/etc"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  install -d -m 1777 "$rootfs/tmp"
}

# oci_image_archive CRANE ROOTFS NAME:TAG ARCHIVE [CRANE-MUTATE-FLAG...]
#   Writes ARCHIVE, an OCI image-layout tar of one image: the files under ROOTFS as its one layer
#   over an empty base, configured by the `crane mutate` flags (--entrypoint, --user, ...).
#   NAME:TAG names the image only inside the build. Runs in a subshell for its own EXIT trap.
oci_image_archive() (
  crane=$1 rootfs=$2 name=$3 archive=$4
  shift 4
  work=$(mktemp -d)
  registry_pid=""
  trap 'if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

  # Fixed order, owners and times, so the same files give the same layer digest. The top-level
  # entries are named rather than ".", which would add a "./" entry to the layer.
  mapfile -t entries < <(cd "$rootfs" && LC_ALL=C ls -A)
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/layer.tar" "${entries[@]}"

  # crane edits images in a registry: serve a private one on a loopback port for this build.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$crane" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do
    if "$crane" catalog --insecure "127.0.0.1:$port" >/dev/null 2>&1; then break; fi
    kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
    sleep 0.1
  done
  ref=127.0.0.1:$port/$name

  "$crane" append --insecure --oci-empty-base -f "$work/layer.tar" -t "$ref" >/dev/null
  "$crane" mutate --insecure "$ref" -t "$ref" "$@" >/dev/null
  "$crane" pull --insecure --format oci "$ref" "$work/layout"
  mkdir -p "$(dirname "$archive")"
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work/layout" -cf "$archive" .
)
