#!/usr/bin/env bash
# Instruction counts per operation for ctxtree and tokio-util's
# CancellationToken, from valgrind's callgrind, for every scenario in
# benches/instructions.rs. Unlike timings, the counts repeat exactly on a busy
# machine, so a change in one is a change in the code.
#
#   scripts/callgrind.sh                       # print the table
#   scripts/callgrind.sh --check FILE          # ... and fail if a ctxtree count
#                                              #     grew past the tolerance
#   scripts/callgrind.sh --write FILE          # ... and write FILE as the new
#                                              #     baseline
#   scripts/callgrind.sh --tolerance 5 --check benches/instructions.baseline
#
# How a count is taken: the bench binary names each measured function
# (`--scenarios`); the script runs it under callgrind once per function with
# collection on only inside that function (--toggle-collect) and a profile
# dumped each time it returns (--dump-after). The binary calls it for a
# warm-up, then for n and 2n repetitions; the difference of the last two
# dumps is n repetitions with every fixed cost gone. From that, per
# repetition, the script subtracts the loop's own cost (the
# `harness_empty_loop` function, measured the same way) and divides by the
# units a repetition covers (nodes, for the cancel scenarios).
#
# Profiles and valgrind's logs go to target/callgrind/. The bench is built
# with the bench profile (`cargo bench --no-run`), as criterion's benches are.
#
# --check: fails if a ctxtree count is more than the tolerance (default 10%)
# above the baseline, and at least one instruction above it, or if a scenario
# of the baseline was not measured. tokio-util's counts are shown but never
# checked: they are not ours to keep.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=""
file=""
tolerance=10
while [ $# -gt 0 ]; do
  case "$1" in
    --check | --write)
      [ $# -ge 2 ] || { echo "callgrind.sh: $1 needs a file" >&2; exit 2; }
      mode="${1#--}"
      file="$2"
      shift 2
      ;;
    --tolerance)
      [ $# -ge 2 ] || { echo "callgrind.sh: --tolerance needs a percentage" >&2; exit 2; }
      tolerance="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "callgrind.sh: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
done
if [ "$mode" = check ] && [ ! -f "$file" ]; then
  echo "callgrind.sh: no baseline file $file" >&2
  exit 2
fi

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind: installing with apt-get"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

echo "building: cargo bench --no-run --bench instructions" >&2
bin=$(cargo bench --no-run --bench instructions --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == "instructions"):
        print(m["executable"])
')
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "callgrind.sh: could not find the instructions bench binary" >&2
  exit 1
fi

out=target/callgrind
mkdir -p "$out"
raw="$out/raw.tsv"
: >"$raw"

# Each line: scenario, library, function, n, units, description.
while IFS=$'\t' read -r scenario library function n units what; do
  base="$out/$scenario.$library"
  rm -f "$base".out "$base".out.* "$base".log
  echo "callgrind: $scenario ($library, $function)" >&2
  if ! valgrind --tool=callgrind --collect-atstart=no \
      --toggle-collect="instructions::$function" \
      --dump-after="instructions::$function" \
      --callgrind-out-file="$base.out" --log-file="$base.log" \
      "$bin" --run "$scenario" "$library" </dev/null; then
    echo "callgrind.sh: $scenario ($library) failed under valgrind; see $base.log" >&2
    exit 1
  fi
  # Dumps 1, 2, 3: the warm-up, n and 2n repetitions.
  counts=()
  for part in 1 2 3; do
    if [ ! -f "$base.out.$part" ]; then
      echo "callgrind.sh: no dump $part for $function in $scenario ($library):" \
        "was the function inlined or merged into another?" >&2
      exit 1
    fi
    counts+=("$(sed -n 's/^totals: *//p' "$base.out.$part")")
  done
  if [ -f "$base.out.4" ]; then
    echo "callgrind.sh: more than three calls of $function in $scenario ($library)" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$scenario" "$library" "$n" "$units" "${counts[0]}" "${counts[1]}" "${counts[2]}" "$what" >>"$raw"
done < <("$bin" --scenarios)

python3 - "$raw" "$mode" "$file" "$tolerance" <<'EOF'
import sys

raw, mode, path, tolerance = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

rows = []  # (scenario, library, per-repetition count, units, what)
for line in open(raw):
    scenario, library, n, units, _warm, i_n, i_2n, what = line.rstrip("\n").split("\t")
    n, units, i_n, i_2n = int(n), int(units), int(i_n), int(i_2n)
    rows.append((scenario, library, (i_2n - i_n) / n, units, what))

loop = [r[2] for r in rows if r[1] == "harness"]
if len(loop) != 1:
    sys.exit("callgrind.sh: expected one harness_empty_loop row")
loop = loop[0]

per_op = {}  # (scenario, library) -> instructions per unit
order = []
what = {}
for scenario, library, per_rep, units, desc in rows:
    if library == "harness":
        continue
    per_op[(scenario, library)] = (per_rep - loop) / units
    if scenario not in order:
        order.append(scenario)
        what[scenario] = desc

REFERENCE = "child_create_drop"  # what merge is compared with


def fmt(x):
    return f"{x:,.1f}"


print()
print(f"instructions per operation (callgrind Ir; the loop's own {fmt(loop)} per repetition subtracted)")
print()
print("| scenario | per | ctxtree | tokio-util | ratio |")
print("|---|---|---:|---:|---:|")
for scenario in order:
    ours = per_op.get((scenario, "ctxtree"))
    theirs = per_op.get((scenario, "tokio-util"))
    unit = "node" if scenario.startswith("cancel_") else "op"
    if theirs is not None:
        cols = (fmt(theirs), f"{ours / theirs:.2f}")
    else:
        ref = per_op[(REFERENCE, "ctxtree")]
        cols = ("—", f"{ours / ref:.2f} of with_cancel")
    print(f"| {scenario} | {unit} | {fmt(ours)} | {cols[0]} | {cols[1]} |")
print()

ours = {s: per_op[(s, "ctxtree")] for s in order}

if mode == "write":
    with open(path, "w") as f:
        f.write("# ctxtree instructions per operation, from scripts/callgrind.sh\n")
        f.write("# (callgrind Ir, loop overhead subtracted; per node for cancel_*).\n")
        f.write("# Regenerate with: scripts/callgrind.sh --write " + path + "\n")
        for s in order:
            f.write(f"{s} {ours[s]:.1f}\n")
    print(f"wrote {path}")
elif mode == "check":
    base = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, count = line.split()
        base[name] = float(count)
    failed = False
    print(f"check against {path} (tolerance {tolerance:g}%, and at least 1 instruction):")
    for name, old in base.items():
        if name not in ours:
            print(f"  FAIL {name}: in the baseline but not measured")
            failed = True
            continue
        new = round(ours[name], 1)  # as --write stores it
        grew = new - old
        pct = 100 * grew / old if old else float("inf")
        bad = grew >= 1 and new > old * (1 + tolerance / 100)
        failed |= bad
        verdict = "FAIL" if bad else "ok  "
        print(f"  {verdict} {name}: {fmt(old)} -> {fmt(new)} ({pct:+.1f}%)")
    for name in ours:
        if name not in base:
            print(f"  new  {name}: {fmt(ours[name])} (not in the baseline)")
    if failed:
        sys.exit("callgrind.sh: check failed: see FAIL above")
EOF
