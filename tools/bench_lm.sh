#!/usr/bin/env bash
# tools/bench_lm.sh — Tessera against plain PyTorch on the same GPT: for each precision backend,
# `tessera init` writes the model's initial weights, `tessera train` trains WARMUP + STEPS steps
# (one metrics record per step), then tools/bench_lm.py trains the same model from those weights
# on the same batches with the same optimizer and threads (it reads the run's
# config.resolved.toml). Prints median step times and their ratio (Tessera / PyTorch), tokens/s,
# model-state bytes/param, peak RSS (CPU) or peak allocated memory (CUDA, PyTorch only), and the
# first step's loss of each (identical weights and batch: fp32 agrees to ~1e-4).
# usage: tools/bench_lm.sh [--device cpu|cuda] [CONFIG] [STEPS] [BACKEND...]
#        (defaults: cpu, configs/lm_small_bench.toml, 30 steps, fp32 bf16_pure; WARMUP=5 steps
#        before them; build first: tools/build.sh; data: tools/prepare_kjv.sh)
# Backends: fp32, bf16, bf16_pure (PyTorch counterparts in tools/bench_lm.py).
# Writes tools/results/bench_lm_<config>_<device>.txt (the command on top; REPORT=FILE elsewhere);
# runs in runs/bench_lm/<config>/ (OUT_DIR=DIR: DIR/<config>/). TESSERA_BIN=path/to/tessera.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu
if [ "${1:-}" = "--device" ]; then device=$2; shift 2; fi
config=${1:-configs/lm_small_bench.toml}
steps=${2:-30}
shift $(( $# > 2 ? 2 : $# )) || true
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(fp32 bf16_pure)
warmup=${WARMUP:-5}
bin=${TESSERA_BIN:-build/bin/tessera}
py=/usr/bin/python3   # Debian's, with python3-torch (not a pyenv python on PATH)
name=$(basename "$config" .toml)
out=${OUT_DIR:-runs/bench_lm}/$name
report=${REPORT:-tools/results/bench_lm_${name}_${device}.txt}
mkdir -p "$out" tools/results

# Runs a command with stdout+stderr to LOG; prints the peak RSS (MiB) of what it started.
peak_rss() {
  "$py" -c 'import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT).returncode
print(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")
sys.exit(rc)' "$@"
}

sets=(--set experiment.device=\""$device"\" --set train.max_steps=$((warmup + steps)) --set train.log_every=1
      --set eval.enabled=false --set train.save_model=false)
"$bin" init "$config" "${sets[@]}" --out "$out/init.safetensors" > "$out/init.log" 2>&1 ||
  { cat "$out/init.log" >&2; echo "bench_lm.sh: tessera init failed (log: $out/init.log)" >&2; exit 1; }

rows=()
for backend in "${backends[@]}"; do
  run="$out/$backend"
  rm -rf "$run"
  mkdir -p "$run"
  if ! tessera_rss=$(peak_rss "$run/train.log" "$bin" train "$config" "${sets[@]}" --set precision.plugin=\""$backend"\" \
      --set experiment.output_dir=\""$run"\"); then
    echo "bench_lm.sh: tessera train failed for $backend:" >&2
    grep -m3 -i "error" "$run/train.log" >&2 || tail -3 "$run/train.log" >&2
    rows+=("$backend failed: $(grep -m1 '^error: ' "$run/train.log" | cut -c8-100 || echo "see $run/train.log")")
    continue
  fi
  total=$(sed -n 's/.* \([0-9]*\) optimizer steps (.*/\1/p' "$run/train.log" | head -1)
  "$py" tools/bench_lm.py --config "$run/config.resolved.toml" --weights "$out/init.safetensors" --precision "$backend" \
    --device "$device" --steps "$steps" --warmup "$warmup" --total-steps "${total:-$((warmup + steps))}" \
    > "$run/pytorch.json" 2> "$run/pytorch.log" ||
    { tail -5 "$run/pytorch.log" >&2; echo "bench_lm.sh: tools/bench_lm.py failed for $backend" >&2; exit 1; }
  rows+=("$("$py" - "$run" "$warmup" "$tessera_rss" <<'PY'
import json, re, statistics, sys
run, warmup, tessera_rss = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
recs = [json.loads(l) for l in open(run + "/metrics.jsonl")]
steps = [r for r in recs if "step" in r and "loss" in r and "eval" not in r]
# step_ms: the mean over the record's window (one step here); older builds: elapsed_s differences.
ms, prev = {}, None
for r in steps:
    if "step_ms" in r:
        ms[r["step"]] = r["step_ms"]
    elif prev is not None:
        ms[r["step"]] = 1000.0 * (r["elapsed_s"] - prev["elapsed_s"]) / (r["step"] - prev["step"])
    prev = r
timed = [v for s, v in ms.items() if s > warmup]
t_ms = statistics.median(timed)
# Model-state bytes/param: a record that carries it, else the log line.
bpp = next((r[k]["total"] for r in recs for k in ("bytes_per_param", "model_state_bytes_per_param")
            if isinstance(r.get(k), dict) and "total" in r[k]), None)
if bpp is None:
    m = re.search(r"model-state bytes/param:.* total ([0-9.]+)", open(run + "/train.log").read())
    bpp = float(m.group(1)) if m else float("nan")
cfg = open(run + "/config.resolved.toml").read()
py = json.loads(open(run + "/pytorch.json").read().strip().splitlines()[-1])
tokens = py["batch_size"] * py["seq_len"]
t_loss, p_loss = steps[0]["loss"], py["first_loss"]
backend = run.rstrip("/").split("/")[-1]
mem_p = f"{py['cuda_max_allocated_mib']:.0f}" if py["cuda_max_allocated_mib"] is not None else f"{py['peak_rss_mib']:.0f}"
mem_t = f"{tessera_rss:.0f}" if py["device"] == "cpu" else next(
    (f"{steps[-1][k]:.0f}" for k in ("cuda_max_allocated_mib", "memory_allocated_mib") if k in steps[-1]), "n/a")
print(f"{backend:<10} {t_ms:>9.1f} {py['step_ms_median']:>9.1f} {t_ms / py['step_ms_median']:>6.2f} "
      f"{tokens * 1000 / t_ms:>9.0f} {py['tokens_per_s']:>9.0f} {bpp:>7.2f} {py['bytes_per_param']['total']:>7.2f} "
      f"{mem_t:>7} {mem_p:>7} {t_loss:>10.6f} {p_loss:>10.6f} {abs(t_loss - p_loss):>8.1e}")
PY
)")
done

mem=$([ "$device" = cpu ] && echo "RSS MiB" || echo "mem MiB")
{
  echo "# tools/bench_lm.sh --device $device $config $steps ${backends[*]}   (WARMUP=$warmup)"
  echo "# $(date -u +%F), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
       "PyTorch $("$py" -c 'import torch; print(torch.__version__)'); median over $steps steps after $warmup warm-up"
  fmt='%-10s %9s %9s %6s %9s %9s %7s %7s %7s %7s %10s %10s %8s\n'
  printf "$fmt" "" "ms/step" "" "ratio" "tokens/s" "" "B/param" "" "peak" "$mem" "first" "loss" ""
  printf "$fmt" backend Tessera PyTorch T/P Tessera PyTorch Tessera PyTorch Tessera PyTorch Tessera PyTorch "|diff|"
  printf '%s\n' "${rows[@]}"
} > "$report"
cat "$report"
