#!/usr/bin/env bash
# Runs fuzz targets for a fixed number of executions each and records what
# they did in bench/results/fuzz/: <target>.log (libFuzzer's last lines and
# final stats) and a row per target in summary.md.
#
#   gateway/fuzz/run.sh                      # every target, 10 M executions each
#   RUNS=1000000 gateway/fuzz/run.sh decode  # one target, 1 M
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). The corpus
# grows in gateway/fuzz/corpus/<target> (git-ignored) from the seeds in
# seeds/<target>; a crash stops that target and leaves its input in
# artifacts/<target>/ — turn it into a regression test before fixing it.
set -uo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
out=../../bench/results/fuzz
mkdir -p "$out"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode request_head ws_lane config)

cargo +nightly fuzz build -O "${targets[@]}" >/dev/null 2>&1 || cargo +nightly fuzz build -O

for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dict=()
  [ -f "$t.dict" ] && dict=("-dict=$t.dict")
  before=$(find "corpus/$t" -type f | wc -l)
  start=$(date +%s)
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -runs="$runs" -print_final_stats=1 "${dict[@]}" 2>&1 | tail -n 60 >"$out/$t.log"
  status=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
  files=$(find "corpus/$t" -type f | wc -l)
  bytes=$(du -sb "corpus/$t" | cut -f1)
  echo "$t exit=$status execs=${execs:-?} seconds=$secs corpus_files=$before->$files corpus_bytes=$bytes artifacts=$crashes"
  printf '| %s | %s | %s | %s | %s → %s | %s | %s |\n' \
    "$t" "${execs:-?}" "$secs" "$status" "$before" "$files" "$bytes" "$crashes" >>"$out/summary-rows.md"
done
