#!/usr/bin/env bash
# tools/bench_data.sh — does reading keep up with training? Trains CONFIG for STEPS steps once per
# [data] workers value and prints, per run, the mean data_wait_ms per step (the step waiting for
# its batch; the first logging window is excluded as warm-up) and samples/s, from metrics.jsonl.
# usage: tools/bench_data.sh [CONFIG] [STEPS] [WORKERS...]   (defaults: configs/tuxpaint_stamps.toml 60 0 2)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tuxpaint_stamps.toml}
steps=${2:-60}
shift $(( $# > 2 ? 2 : $# )) || true
workers=("$@")
[ ${#workers[@]} -eq 0 ] && workers=(0 2)
bin=${TESSERA_BIN:-build/bin/tessera}
out=${OUT_DIR:-runs/bench_data}
name=$(basename "$config" .toml)
mkdir -p "$out"
report="$out/bench_data_${name}.txt"
{
  echo "# $config, $steps steps, $(nproc) cores, $(date -u +%Y-%m-%d)"
  printf "%-8s %-16s %-14s %s\n" workers data_wait_ms samples/s "wait share of step"
} > "$report"
for w in "${workers[@]}"; do
  dir="$out/${name}_w$w"
  rm -rf "$dir"
  "$bin" train "$config" --set data.workers="$w" --set train.max_steps="$steps" --set train.log_every=10 \
    --set eval.enabled=false --set train.save_model=false --set experiment.output_dir="$dir" > "$dir.log" 2>&1
  python3 - "$dir" "$w" >> "$report" <<'PY'
import json, sys, tomllib
run, workers = sys.argv[1], sys.argv[2]
cfg = tomllib.load(open(run + "/config.resolved.toml", "rb"))
batch = cfg.get("data", {}).get("batch_size", 128) * cfg.get("train", {}).get("grad_accum", 1)
recs = [json.loads(l) for l in open(run + "/metrics.jsonl") if '"eval"' not in l]
recs = recs[1:] or recs  # the first window is warm-up
wait = sum(r["data_wait_ms"] for r in recs) / len(recs)
sps = sum(r["samples_per_s"] for r in recs) / len(recs)
step_ms = 1000.0 * batch / sps
print(f"{workers:<8} {wait:<16.1f} {sps:<14.1f} {wait / step_ms:.0%} of {step_ms:.0f} ms")
PY
done
cat "$report"
