#!/usr/bin/env bash
# Installs a built ipcbus tree into a temporary prefix and builds a downstream
# project against it twice: through the CMake package (find_package(ipcbus) and
# ipcbus::bus) and through pkg-config (ipcbus.pc). Each build is run once: it
# sends one message to itself and must receive the same bytes back.
#
#   install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build_dir="$(readlink -f "$1")"
consumer_src="$(readlink -f "$2")/tests/install/consumer"

work="$(mktemp -d "${TMPDIR:-/tmp}/ipcbus-install-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
mkdir -m 0700 "$work/runtime"

step() { printf '==> %s\n' "$*"; }

# A sanitizer build installs instrumented libraries: the consumer must link the
# sanitizer runtimes too (the exported targets do not carry -fsanitize).
extra_flags=()
if grep -q '^IPCBUS_SANITIZE:BOOL=ON$' "$build_dir/CMakeCache.txt"; then
  extra_flags=("-fsanitize=address,undefined" -fno-omit-frame-pointer)
fi

step "installing ${build_dir} into ${prefix}"
cmake --install "$build_dir" --prefix "$prefix"

step "building the consumer with find_package(ipcbus)"
cmake -S "$consumer_src" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="${extra_flags[*]}"
cmake --build "$work/consumer-build"
step "running the CMake-built consumer"
"$work/consumer-build/ipcbus_consumer" "$work/runtime/cmake"

step "building the consumer with pkg-config"
pc_file="$(find "$prefix" -name ipcbus.pc -print -quit)"
if [[ -z "$pc_file" ]]; then
  echo "install_test: no ipcbus.pc under ${prefix}" >&2
  exit 1
fi
PKG_CONFIG_PATH="$(dirname "$pc_file")"
export PKG_CONFIG_PATH
flags="$(pkg-config --cflags --libs ipcbus)"
echo "pkg-config --cflags --libs ipcbus: ${flags}"
# shellcheck disable=SC2086  # the flags are meant to be split into words
g++ -std=c++20 "${extra_flags[@]}" "$consumer_src/main.cpp" -o "$work/consumer-pkgconfig" $flags
step "running the pkg-config-built consumer"
"$work/consumer-pkgconfig" "$work/runtime/pkgconfig"

step "install test passed"
