#!/usr/bin/env bash
# tools/bench_checkpointing.sh — activation checkpointing on and off for the `gpt` encoder on the
# KJV token shards: peak RSS of `tessera train` (/usr/bin/time -v) and the step time, per sequence length.
# usage: tools/bench_checkpointing.sh [STEPS] [SEQ_LENS]   (defaults: 12 steps, "128 512")
#   D_MODEL=256 N_LAYERS=4 N_HEADS=4 BATCH=8 THREADS=2; data: tools/prepare_kjv.sh; build first.
# The loss is cross_entropy per token. Prints a table and writes
# it to runs/bench_checkpointing/bench_checkpointing.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-12}
seq_lens=${2:-"128 512"}
d_model=${D_MODEL:-256} n_layers=${N_LAYERS:-4} n_heads=${N_HEADS:-4} batch=${BATCH:-8} threads=${THREADS:-2}
tessera=build/bin/tessera
out=runs/bench_checkpointing
mkdir -p "$out"
[ -x /usr/bin/time ] || { echo "bench_checkpointing.sh: needs GNU time (Debian: apt install time)" >&2; exit 1; }
ls ~/.cache/tessera/kjv/kjv_train_*.bin >/dev/null 2>&1 || { echo "bench_checkpointing.sh: run tools/prepare_kjv.sh first" >&2; exit 1; }

# The experiment: configs/kjv_tokens.toml's data, a GPT, a token-level cross-entropy.
config="$out/gpt_kjv.toml"
{
  sed -n '/^\[experiment\]/,$p' configs/kjv_tokens.toml
  cat <<EOF
[[encoder]]
plugin = "gpt"
vocab_size = 8192
max_seq_len = 1024
d_model = $d_model
n_layers = $n_layers
n_heads = $n_heads
dropout = 0.1

[[loss]]
plugin = "cross_entropy"
logits = "logits"
target = "labels"
normalize = "tokens"

[optimizer]
lr = 0.001

[eval]
enabled = false
EOF
} > "$config"

table="$out/bench_checkpointing.txt"
{
  echo "# tools/bench_checkpointing.sh $steps \"$seq_lens\"   ($(date -u +%F), $(nproc) cores, $threads threads)"
  echo "# gpt d_model=$d_model n_layers=$n_layers n_heads=$n_heads vocab=8192, batch $batch, fp32, dropout 0.1"
  printf '%-6s %-11s %14s %10s\n' T checkpoint "peak RSS MiB" "ms/step"
} > "$table"
for t in $seq_lens; do
  for ckpt in false true; do
    run="$out/T${t}_${ckpt}"
    rm -rf "$run"
    /usr/bin/time -v "$tessera" train "$config" --set experiment.plugin_path='["build/tests/plugins"]' \
      --set experiment.output_dir="$run" --set experiment.threads="$threads" --set data.seq_len="$t" \
      --set data.batch_size="$batch" --set encoder.0.checkpoint_activations="$ckpt" \
      --set train.max_steps="$steps" --set train.log_every=$((steps / 2)) --set train.save_model=false \
      > "$run.log" 2>&1
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$run.log")
    # Step time of the run's second half (the first half includes warm-up).
    ms=$(python3 -c "
import json
rec = [json.loads(l) for l in open('$run/metrics.jsonl')][-2:]
print(f\"{(rec[1]['elapsed_s'] - rec[0]['elapsed_s']) * 1000 / (rec[1]['step'] - rec[0]['step']):.0f}\")")
    printf '%-6s %-11s %14.0f %10s\n' "$t" "$ckpt" "$(awk -v k="$rss_kb" 'BEGIN { print k / 1024 }')" "$ms" >> "$table"
  done
done
cat "$table"
