#!/usr/bin/env bash
# tools/bench_zero.sh — ZeRO stages side by side: the per-rank model-state bytes/param each
# rank measures from its own tensors (and logs at start), and the training throughput, for
# 1, 2 and 4 local ranks (`tessera launch`), one thread per rank; step time and samples/s are
# those of the run's second half (after warm-up).
# usage: tools/bench_zero.sh [CONFIG] [STEPS] [BACKEND]
#        (defaults: configs/fashion_mnist.toml, 200 steps, fp32; build first: tools/build.sh)
# Prints a table and writes it to runs/bench_zero/bench_zero.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/fashion_mnist.toml}
steps=${2:-200}
backend=${3:-fp32}
tessera=build/bin/tessera
out=runs/bench_zero
mkdir -p "$out"
table="$out/bench_zero.txt"
{
  echo "# tools/bench_zero.sh $config $steps $backend   ($(date -u +%F), $(nproc) cores)"
  printf '%-6s %-6s %10s %10s %10s %10s %10s %10s %11s\n' ranks stage params grads master states total "ms/step" "samples/s"
} > "$table"
for n in 1 2 4; do
  for stage in 0 1 2; do
    [ "$n" = 1 ] && [ "$stage" != 0 ] && continue  # one rank has nothing to partition
    run="$out/n${n}_s${stage}"
    rm -rf "$run"
    log="$run.log"
    "$tessera" launch --nproc "$n" -- train "$config" --set train.max_steps="$steps" --set train.log_every=$((steps / 2)) \
      --set eval.enabled=false --set experiment.threads=1 --set dist.zero_stage="$stage" \
      --set precision.plugin="$backend" --set experiment.output_dir="$run" > "$log" 2>&1
    # "model-state bytes/param: parameters 4.00 gradients 2.00 master 0.00 optimizer_states 4.00 total 10.00"
    read -r p g m s t < <(sed -n 's/.*model-state bytes\/param: parameters \([0-9.]*\) gradients \([0-9.]*\) master \([0-9.]*\) optimizer_states \([0-9.]*\) total \([0-9.]*\).*/\1 \2 \3 \4 \5/p' "$log")
    # Throughput of the second half of the run (the first half includes warm-up).
    read -r ms sps < <(python3 -c "
import json
rec = [json.loads(l) for l in open('$run/metrics.jsonl')][-2:]
steps = rec[1]['step'] - rec[0]['step']; secs = rec[1]['elapsed_s'] - rec[0]['elapsed_s']
print(f'{secs * 1000 / steps:.1f} {rec[1][\"samples_per_s\"]:.0f}')")
    printf '%-6s %-6s %10s %10s %10s %10s %10s %10s %11s\n' "$n" "$stage" "$p" "$g" "$m" "$s" "$t" "$ms" "$sps" >> "$table"
  done
done
cat "$table"
