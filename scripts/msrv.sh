#!/usr/bin/env bash
# Builds and tests the crate with its minimum supported Rust version (MSRV),
# the `rust-version` of Cargo.toml:
#
#   cargo +MSRV check --locked --all-targets --all-features
#   cargo +MSRV test  --locked --lib --tests
#   cargo +MSRV test  --locked --doc
#
# It installs that toolchain with rustup if it is missing. The crate's own
# Cargo.lock pins versions for the newest Rust, so the script works on a
# copy of the crate (target/msrv/crate) with a lockfile of its own, made by
# cargo's MSRV-aware resolver: every dependency at its newest version whose
# `rust-version` the MSRV meets. The crate's Cargo.lock is not touched.
#
# Needs rustup and a default cargo of 1.84 or newer (for the resolver).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

msrv=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["rust_version"] or "")')
if [ -z "$msrv" ]; then
  echo "msrv: Cargo.toml has no rust-version" >&2
  exit 1
fi
echo "MSRV (rust-version in Cargo.toml): $msrv"

cargo_minor=$(cargo --version | sed -E 's/^cargo 1\.([0-9]+).*/\1/')
if [ "$cargo_minor" -lt 84 ]; then
  echo "msrv: $(cargo --version) has no MSRV-aware resolver; cargo 1.84 or newer is needed" >&2
  exit 1
fi

if ! rustup run "$msrv" cargo --version >/dev/null 2>&1; then
  echo "msrv: installing Rust $msrv with rustup"
  rustup toolchain install "$msrv" --profile minimal
fi
rustup run "$msrv" cargo --version
rustup run "$msrv" rustc --version

# A fresh copy of the working tree (tracked files and new ones git does not
# ignore), so the MSRV build sees what the rest of CI sees. Its target
# directory lives beside it and is kept between runs.
copy=target/msrv/crate
export CARGO_TARGET_DIR="$root/target/msrv/target"
rm -rf "$copy"
mkdir -p "$copy"
git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- -cf - | tar -xf - -C "$copy"
rm -f "$copy/Cargo.lock"

echo "-- lockfile for Rust $msrv (CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback)"
(cd "$copy" && CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile)
# Cargo writes the newest lockfile format the MSRV's cargo reads (version 3
# before Rust 1.78); --locked below fails if that cargo cannot read it.
echo "lockfile $(grep -m1 '^version = ' "$copy/Cargo.lock")"

cd "$copy"
echo "-- cargo +$msrv check --locked --all-targets --all-features"
cargo "+$msrv" check --locked --all-targets --all-features
echo "-- cargo +$msrv test --locked --lib --tests"
cargo "+$msrv" test --locked --lib --tests
echo "-- cargo +$msrv test --locked --doc"
cargo "+$msrv" test --locked --doc
echo "msrv: Rust $msrv builds every target and passes the tests and doctests"
