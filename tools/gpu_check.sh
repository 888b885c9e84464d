#!/usr/bin/env bash
# tools/gpu_check.sh — everything this project checks on a CUDA machine, in one run sized for
# one device call (about 10 minutes on an H100/H200 with 16 cores):
#   1. the whole project against python3's LibTorch (CUDA), CUDA kernels included, and the
#      CUDA kernel tests against their CPU versions (tools/gpu_kernel_check.sh --full);
#   2. the tests that need CUDA: ProcessGroupNCCL on one rank, the precision plugins on CUDA
#      shards, and the rest of the unit suite that touches devices;
#   3. `tessera bench` of the five precision backends on configs/fashion_mnist.toml with
#      device = "cuda" (fp16's accuracy criterion can only be met here).
# Results go to $OUT (default /tmp/tessera-gpu-out). Dependencies the machine lacks come from
# .deps/*.tar.gz (tools/collect-gpu-deps.sh: ../shared/gpu/collect-deps.sh + CLI11), as in gpu_kernel_check.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/tessera-gpu-out}
build=${TESSERA_GPU_BUILD:-build-gpu}
mkdir -p "$out"
status=0

# ProcessGroupGloo.hpp includes gloo's headers; say so at once if this LibTorch lacks them.
inc="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
[ -d "$inc/gloo" ] || echo "note: $inc has no gloo/ headers: this build will refuse CPU collectives (NCCL is unaffected)" | tee "$out/gloo.txt"

echo "== 1. build + CUDA kernel tests"
bash tools/gpu_kernel_check.sh --full "$build" 2>&1 | tee "$out/1-kernels.txt" || status=1

echo "== 2. device tests"
"$build/bin/tessera_tests" --gtest_filter='Comm.*:CudaKernels.*:PrecisionBackends.*' 2>&1 |
  tee "$out/2-device-tests.txt" || status=1

echo "== 3. bench of the five backends on cuda"
"$build/bin/tessera" bench configs/fashion_mnist.toml --backends fp32,bf16,bf16_remainder,bf16_pure,fp16 \
  --set experiment.device=cuda --out "$out/bench_fashion_mnist_cuda" 2>&1 | tee "$out/3-bench.txt" || status=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
exit $status
