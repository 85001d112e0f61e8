#!/usr/bin/env bash
# Builds the shadowstore container image (FROM scratch): /shadowstore,
# /shadowctl and the shared libraries they link, at the paths ldd names.
#
#   deploy/image/build.sh                          # cargo build --release, then the image shadowstore:dev
#   deploy/image/build.sh --profile debug --no-build   # package the existing target/debug binaries
#   deploy/image/build.sh --tag registry.example/shadowstore:0.1.0
#
# Options:
#   --profile release|debug  which cargo profile's binaries (default release)
#   --no-build               do not run cargo; use the binaries already built
#   --tag NAME:TAG           image tag (default $SHADOWSTORE_IMAGE, else shadowstore:dev)
#   --no-strip               keep the binaries' debug info (default: strip it
#                            from the copies in the image, keeping the symbol
#                            table so backtraces still name functions)
#   -h, --help
#
# CARGO_TARGET_DIR is honoured. Needs docker, ldd, and strip unless --no-strip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

profile=release
build=1
strip=1
tag="${SHADOWSTORE_IMAGE:-shadowstore:dev}"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "build.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --profile) [ $# -ge 2 ] || die "--profile needs a value"; profile="$2"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
        --tag=*) tag="${1#*=}"; shift ;;
        --no-strip) strip=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$profile" in
    release) cargo_profile=(--release) ;;
    debug) cargo_profile=() ;;
    *) die "--profile must be release or debug, got '$profile'" ;;
esac

command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed"
if [ "$strip" = 1 ] && ! command -v strip >/dev/null; then
    die "strip is not installed (binutils); install it or pass --no-strip"
fi

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin_dir="$target_dir/$profile"

if [ "$build" = 1 ]; then
    echo "build.sh: cargo build${cargo_profile[*]:+ ${cargo_profile[*]}} -p shadowstore-node -p shadowstore-client --bins" >&2
    (cd "$repo" && cargo build "${cargo_profile[@]}" -p shadowstore-node -p shadowstore-client --bins)
fi

for b in shadowstore shadowctl; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b not found: build it (drop --no-build) or pick the right --profile"
done

ctx="$(mktemp -d "${TMPDIR:-/tmp}/shadowstore-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib/shadowstore"
chmod 1777 "$root/tmp"
chmod 0755 "$root/var/lib/shadowstore"
# glibc without nsswitch.conf tries DNS first; files first honours the
# /etc/hosts docker writes. Both modules are built into glibc >= 2.34.
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

# Copies the binaries and every library they load to the same path in the
# image (the copies, not the links: the image has no /usr merge symlinks).
libs=()
for b in shadowstore shadowctl; do
    cp "$bin_dir/$b" "$root/$b"
    chmod 0755 "$root/$b"
    if [ "$strip" = 1 ]; then
        strip --strip-debug "$root/$b"
    fi
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
    # "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
    while read -r lib; do
        libs+=("$lib")
    done < <(ldd "$bin_dir/$b" | awk '
        $2 == "=>" && $3 ~ /^\// { print $3; next }
        $2 == "=>" && $3 == "not" { print "MISSING:" $1; next }
        $1 ~ /^\// { print $1 }')
done
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
    case "$lib" in MISSING:*) die "ldd cannot find ${lib#MISSING:} for the binaries" ;; esac
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

cp "$here/Dockerfile" "$ctx/Dockerfile"
version="$("$bin_dir/shadowstore" --version 2>/dev/null | awk '{print $2}')" || version=unknown

stripped=""; [ "$strip" = 1 ] && stripped=", debug info stripped"
echo "build.sh: image $tag from $bin_dir (profile $profile$stripped); libraries:" >&2
printf '%s\n' "${libs[@]}" | sort -u | sed 's/^/  /' >&2
previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null)" || previous=""
if ! docker build --tag "$tag" \
    --build-arg "VERSION=${version:-unknown}" --build-arg "PROFILE=$profile" \
    "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    die "docker build failed"
fi

# The image must start: the loader and every library must be where the
# binaries look for them.
docker run --rm "$tag" --version >/dev/null || die "the image $tag does not run /shadowstore"
docker run --rm --entrypoint /shadowctl "$tag" --version >/dev/null || die "the image $tag does not run /shadowctl"
# The image this tag named before, now untagged: removed unless a container uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
size="$(docker image inspect --format '{{.Size}}' "$tag")"
echo "build.sh: built $tag ($((size / 1000000)) MB)" >&2
echo "$tag"
