#!/usr/bin/env bash
# Runs the tests that race real threads under ThreadSanitizer: any data race
# it reports fails the run (a report makes the test process exit non-zero;
# nothing is suppressed).
#
#   scripts/tsan.sh
#
#   CTXTREE_TSAN_FULL=1 scripts/tsan.sh   # also tests/all (slow)
#
# What runs: the library's unit tests, tests/races.rs (every pair of
# operations that can meet on one node), tests/cancel_guarantee.rs (racing
# cancels of a root and its middle nodes) and tests/stress.rs (random
# operations on one shared tree, timers included). The full mode adds
# tests/all, without its modules that need the heavy dev-dependencies: it
# takes a few minutes more. Everything is built with `--cfg ctxtree_checks`,
# which leaves the heavy dev-dependencies out (see Cargo.toml), and with
# the standard library rebuilt under the sanitizer (`-Zbuild-std`), so that
# std's own synchronisation is seen too.
#
# Needs rustup; installs the nightly toolchain, or its `rust-src`
# component, if missing. Target dir: target/tsan.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "tsan: installing the nightly toolchain with rust-src"
  rustup toolchain install nightly --profile minimal --component rust-src
elif ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "tsan: installing rust-src for nightly"
  rustup component add --toolchain nightly rust-src
fi
cargo +nightly --version

# -Zbuild-std needs an explicit target: this machine's own.
target=$(rustc +nightly -vV | sed -n 's/^host: //p')

export CARGO_TARGET_DIR=target/tsan
export RUSTFLAGS="${RUSTFLAGS:-} -Zsanitizer=thread --cfg ctxtree_checks"
# The tests' own patience (how long they wait for what must happen) grows
# for instrumented builds; the checks stay the same.
export CTXTREE_SLOW=1

tests=(--lib --test races --test cancel_guarantee --test stress)
if [[ "${CTXTREE_TSAN_FULL:-}" == 1 ]]; then tests+=(--test all); fi

start=$SECONDS
status=0
echo "== tsan: RUSTFLAGS=\"$RUSTFLAGS\" cargo +nightly test -Zbuild-std --target $target ${tests[*]}"
if cargo +nightly test -Zbuild-std --target "$target" --no-fail-fast "${tests[@]}"; then
  echo "== tsan: passed in $((SECONDS - start)) s"
else
  echo "== tsan: FAILED after $((SECONDS - start)) s: see the reports and failures above"
  status=1
fi
exit $status
