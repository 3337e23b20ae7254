#!/usr/bin/env bash
# Runs the Miri-suited tests under Miri, which checks every memory access
# the tests make: aliasing (Stacked Borrows, then Tree Borrows), data races,
# provenance, use after free, leaks. Any error Miri reports fails the run.
#
#   scripts/miri.sh                     # the core set: what CI runs
#   CTXTREE_MIRI_FULL=1 scripts/miri.sh # also tests/all's suites, four seeds
#
# The core set, all built with `--cfg ctxtree_checks` so that the heavy
# dev-dependencies are left out (see Cargo.toml), with
# `-Zmiri-strict-provenance` (no integer-to-pointer casts), under both
# borrow models (Stacked, then Tree Borrows):
#
# - the library's unit tests (`--lib`), tests/races.rs and
#   tests/cancel_guarantee.rs, with four seeds of Miri's scheduler and
#   allocator each (`-Zmiri-many-seeds=0..4`, or one run per `-Zmiri-seed`
#   if this Miri lacks many-seeds);
# - the functional suites of tests/all, picked by module filter: the
#   cancellation, causes, values, after_func, merge, group, depth (drop
#   chains), stream, reentrancy, grace and display modules, with one seed
#   (0) each, as they are the slow part (minutes per model). The filter
#   leaves out bad_input, the one other module built under ctxtree_checks,
#   whose deep chains and century-long deadlines are not sized for Miri;
#   the modules built on smol, tokio, async-std or proptest (deadlines,
#   executors, group_errors, model, run_wait, wire) are not built at all.
#   In the picked modules, the tests that need those crates are not built
#   either; under Miri, the tests that derive a future deadline are
#   ignored, each with its reason (async-io's timers need
#   `timerfd_create`, which Miri cannot emulate), as is a wall-clock cost
#   test; the big loops, chains and trees shrink (`miri_or` in
#   tests/common), e.g. the million-node drop chains to 500 nodes.
#
# The full mode runs the same suites of tests/all with four seeds per
# borrow model, as the rest of the core set. It is for people, not CI.
#
# Needs rustup; installs the nightly toolchain, or its `miri` and
# `rust-src` components, if `cargo +nightly miri` is missing. Target dir:
# target/miri.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "miri: installing the nightly toolchain with miri and rust-src"
  rustup toolchain install nightly --profile minimal --component miri,rust-src
elif ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "miri: installing miri and rust-src for nightly"
  rustup component add --toolchain nightly miri rust-src
fi
cargo +nightly miri --version
cargo +nightly miri setup

base_rustflags="${RUSTFLAGS:-}"
status=0
total_start=$SECONDS

# run LABEL MIRIFLAGS CARGO-TEST-ARGS...: one `cargo miri test`, timed.
run() {
  local label=$1 flags=$2
  shift 2
  echo
  echo "== miri, $label: MIRIFLAGS=\"$flags\" cargo +nightly miri test $*"
  local start=$SECONDS
  if MIRIFLAGS="$flags" cargo +nightly miri test "$@"; then
    echo "-- miri, $label: passed in $((SECONDS - start)) s"
  else
    echo "!! miri, $label: FAILED after $((SECONDS - start)) s"
    status=1
  fi
}

# seeds LABEL MIRIFLAGS CARGO-TEST-ARGS...: `run` over seeds 0 to 3.
seeds() {
  local label=$1 flags=$2
  shift 2
  if [[ "$many_seeds" == 1 ]]; then
    run "$label, seeds 0..4" "$flags -Zmiri-many-seeds=0..4" "$@"
  else
    for seed in 0 1 2 3; do
      run "$label, seed $seed" "$flags -Zmiri-seed=$seed" "$@"
    done
  fi
}

# Both borrow models, strict provenance, four seeds each.
both_models() {
  seeds "stacked borrows" "-Zmiri-strict-provenance" "$@"
  seeds "tree borrows" "-Zmiri-strict-provenance -Zmiri-tree-borrows" "$@"
}

# --- the core set -----------------------------------------------------------

export CARGO_TARGET_DIR=target/miri
export RUSTFLAGS="$base_rustflags --cfg ctxtree_checks"
core=(--no-fail-fast --lib --test races --test cancel_guarantee)

echo
echo "== miri: building the core set"
cargo +nightly miri test --no-run "${core[@]}"

# Does this Miri know -Zmiri-many-seeds? Ask it with a run that only lists
# the library's tests; an unknown flag is an error of its own.
many_seeds=1
if ! probe=$(MIRIFLAGS="-Zmiri-many-seeds=0..1" cargo +nightly miri test --lib -- --list 2>&1); then
  if grep -q "unknown unstable option.*many-seeds" <<<"$probe"; then
    echo "miri: no -Zmiri-many-seeds here; one run per -Zmiri-seed instead"
    many_seeds=0
  else
    echo "$probe" >&2
    echo "miri: listing the library's tests failed" >&2
    exit 1
  fi
fi

both_models "${core[@]}"

# --- tests/all's functional suites -----------------------------------------

suites=(cancellation causes values after_func merge group depth stream reentrancy grace display)
filters=()
for s in "${suites[@]}"; do filters+=("$s::"); done

echo
echo "== miri: building tests/all"
cargo +nightly miri test --no-run --test all

if [[ "${CTXTREE_MIRI_FULL:-}" == 1 ]]; then
  both_models --no-fail-fast --test all -- "${filters[@]}"
else
  run "tests/all, stacked borrows, seed 0" "-Zmiri-strict-provenance -Zmiri-seed=0" \
    --no-fail-fast --test all -- "${filters[@]}"
  run "tests/all, tree borrows, seed 0" "-Zmiri-strict-provenance -Zmiri-tree-borrows -Zmiri-seed=0" \
    --no-fail-fast --test all -- "${filters[@]}"
fi

echo
if [[ $status == 0 ]]; then
  echo "== miri: every run passed ($((SECONDS - total_start)) s in all)"
else
  echo "== miri: FAILED: see the runs marked !! above ($((SECONDS - total_start)) s in all)"
fi
exit $status
