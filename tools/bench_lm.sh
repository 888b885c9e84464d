#!/usr/bin/env bash
# tools/bench_lm.sh — Tessera against plain PyTorch on the same GPT: for each precision backend,
# `tessera init` writes the model's initial weights, `tessera train` trains WARMUP + STEPS steps
# (one metrics record per step), then tools/bench_lm.py trains the same model from those weights
# on the same batches with the same optimizer and threads (it reads the run's
# config.resolved.toml). Prints median step times and their ratio (Tessera / PyTorch), tokens/s,
# model-state bytes/param, peak RSS (CPU) or the CUDA allocator's peak, and the
# first step's loss of each (identical weights and batch: fp32 agrees to ~1e-4).
# usage: tools/bench_lm.sh [CONFIG] [STEPS] [BACKEND...] [--device cpu|cuda]
#        (defaults: cpu, configs/lm_small_bench.toml, 30 steps, fp32 bf16_pure; WARMUP=5 steps
#        before them; build first: tools/build.sh; data: tools/prepare_kjv.sh)
# Backends: fp32, bf16, bf16_pure (PyTorch counterparts in tools/bench_lm.py). THREADS=N sets both
# sides' intra-op threads (default: the config's, 0 = all cores).
# Writes tools/results/bench_lm_<config>_<device>[_t<THREADS>].txt, the command on top (REPORT=FILE
# elsewhere); runs go to runs/bench_lm/<config>/ (OUT_DIR=DIR: DIR/<config>/); TESSERA_BIN=path.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu
args=()
while [ $# -gt 0 ]; do  # --device may come anywhere
  case "$1" in
    --device) device=${2:?--device needs cpu or cuda}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
config=${args[0]:-configs/lm_small_bench.toml}
steps=${args[1]:-30}
backends=("${args[@]:2}")
[ ${#backends[@]} -eq 0 ] && backends=(fp32 bf16_pure)
warmup=${WARMUP:-5}
bin=${TESSERA_BIN:-build/bin/tessera}
py=/usr/bin/python3   # Debian's, with python3-torch (not a pyenv python on PATH)
name=$(basename "$config" .toml)
out=${OUT_DIR:-runs/bench_lm}/$name
threads=${THREADS:-}  # intra-op threads of both; empty = the config's [experiment] threads
report=${REPORT:-tools/results/bench_lm_${name}_${device}${threads:+_t$threads}.txt}
mkdir -p "$out" tools/results

sets=(--set experiment.device=\""$device"\" --set train.max_steps=$((warmup + steps)) --set train.log_every=1
      --set eval.enabled=false --set train.save_model=false)
if [ -n "$threads" ]; then
  sets+=(--set experiment.threads="$threads")
  # OpenBLAS keeps its own pool (as many threads as cores), which neither at::set_num_threads nor
  # torch.set_num_threads sizes: without this, "1 thread" still runs every matmul on all cores.
  export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
fi
"$bin" init "$config" "${sets[@]}" --out "$out/init.safetensors" > "$out/init.log" 2>&1 ||
  { cat "$out/init.log" >&2; echo "bench_lm.sh: tessera init failed (log: $out/init.log)" >&2; exit 1; }

rows=()
for backend in "${backends[@]}"; do
  run="$out/$backend"
  rm -rf "$run"
  mkdir -p "$run"
  if ! "$bin" train "$config" "${sets[@]}" --set precision.plugin=\""$backend"\" --set experiment.output_dir=\""$run"\" \
      > "$run/train.log" 2>&1; then
    echo "bench_lm.sh: tessera train failed for $backend:" >&2
    grep -m3 -i "error" "$run/train.log" >&2 || tail -3 "$run/train.log" >&2
    rows+=("$backend failed: $(grep -m1 '^error: ' "$run/train.log" | cut -c8-100 || echo "see $run/train.log")")
    continue
  fi
  "$py" tools/bench_lm.py --config "$run/config.resolved.toml" --weights "$out/init.safetensors" --precision "$backend" \
    --device "$device" --steps "$steps" --warmup "$warmup" \
    > "$run/pytorch.json" 2> "$run/pytorch.log" ||
    { tail -5 "$run/pytorch.log" >&2; echo "bench_lm.sh: tools/bench_lm.py failed for $backend" >&2; exit 1; }
  rows+=("$("$py" - "$run" "$warmup" <<'PY'
import json, statistics, sys
run, warmup = sys.argv[1], int(sys.argv[2])
recs = [json.loads(l) for l in open(run + "/metrics.jsonl")]
steps = [r for r in recs if "loss" in r and not r.get("eval") and not r.get("header")]
timed = [r["step_ms"] for r in steps if r["step"] > warmup]  # one step per record here
t_ms = statistics.median(timed)
header = next(r for r in recs if r.get("header"))  # what the run is, its model-state bytes/param
bpp = header["bytes_per_param"]["total"]
py = json.loads(open(run + "/pytorch.json").read().strip().splitlines()[-1])
tokens = py["batch_size"] * py["seq_len"]
t_loss, p_loss = steps[0]["loss"], py["first_loss"]
backend = run.rstrip("/").split("/")[-1]
# Peak memory: RSS on CPU, the CUDA allocator's peak on a GPU (both as each process reports it).
if py["device"] == "cpu":
    mem_t, mem_p = steps[-1].get("rss_peak_mib", float("nan")), py["peak_rss_mib"]
else:
    mem_t, mem_p = steps[-1].get("cuda_peak_mib", float("nan")), py["cuda_max_allocated_mib"]
print(f"{backend:<10} {t_ms:>9.1f} {py['step_ms_median']:>9.1f} {t_ms / py['step_ms_median']:>6.2f} "
      f"{tokens * 1000 / t_ms:>9.0f} {py['tokens_per_s']:>9.0f} {bpp:>7.2f} {py['bytes_per_param']['total']:>7.2f} "
      f"{mem_t:>7.0f} {mem_p:>7.0f} {t_loss:>10.6f} {p_loss:>10.6f} {abs(t_loss - p_loss):>8.1e}")
# The whole loss curve, step by step, for the note under the table.
diffs = [abs(r["loss"] - p) for r, p in zip(steps, py["losses"])]
worst = max(range(len(diffs)), key=diffs.__getitem__)
with open(run + "/agreement.txt", "w") as f:
    f.write(f"{backend} ({py['threads']} threads): fastest step Tessera {min(timed):.1f} ms, PyTorch {min(py['step_ms']):.1f} ms "
            f"(ratio {min(timed) / min(py['step_ms']):.2f}); loss at step {len(diffs)} Tessera {steps[len(diffs) - 1]['loss']:.6f} PyTorch "
            f"{py['losses'][-1]:.6f}; largest |diff| {diffs[worst]:.1e} at step {worst + 1}\n")
PY
)")
done

mem=$([ "$device" = cpu ] && echo "RSS MiB" || echo "CUDA MiB")
{
  echo "# ${threads:+THREADS=$threads }${OPENBLAS_NUM_THREADS:+OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS }WARMUP=$warmup tools/bench_lm.sh --device $device $config $steps ${backends[*]}"
  echo "# $(date -u +%F), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
       "PyTorch $("$py" -c 'import torch; print(torch.__version__)'); median over $steps steps after $warmup warm-up"
  fmt='%-10s %9s %9s %6s %9s %9s %7s %7s %7s %7s %10s %10s %8s\n'
  printf "$fmt" "" "ms/step" "" "ratio" "tokens/s" "" "B/param" "" "peak" "$mem" "first" "loss" ""
  printf "$fmt" backend Tessera PyTorch T/P Tessera PyTorch Tessera PyTorch Tessera PyTorch Tessera PyTorch "|diff|"
  printf '%s\n' "${rows[@]}"
  for backend in "${backends[@]}"; do cat "$out/$backend/agreement.txt" 2>/dev/null || true; done
  case " ${backends[*]} " in *" bf16 "*)
    echo "bf16: Tessera's fp32 master starts as the bf16-rounded weights, PyTorch's as the fp32 init, so their" \
         "losses part after step 1 and meet again (a PyTorch master made from the rounded weights agrees to 1e-4)" ;; esac
  case " ${backends[*]} " in *" bf16_pure "*)
    echo "bf16_pure: Tessera rounds each update stochastically, PyTorch to nearest (updates below bf16's" \
         "resolution are lost: its loss lags)" ;; esac
} > "$report"
cat "$report"
