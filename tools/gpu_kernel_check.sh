#!/usr/bin/env bash
# tools/gpu_kernel_check.sh — on a machine with a CUDA GPU: builds the CUDA kernels and
# tests/unit/test_cuda_kernels.cpp and runs those tests (every kernel against its CPU version).
#
# usage: tools/gpu_kernel_check.sh [--full] [build dir]
#   default  kernels/ + the test file alone (nvcc, g++, GoogleTest sources; no LibTorch): about a
#            minute. Build dir default: /tmp/tessera-gpu-kernels.
#   --full   the whole project against python3's LibTorch, then tessera_tests --gtest_filter=
#            'CudaKernels.*', which adds the precision plugins on CUDA shards. Build dir
#            default: build-gpu.
# GoogleTest (and, for --full, TOML++/spdlog/...) come from TESSERA_DEPS (default /tmp/deps),
# unpacked from .deps/gpu-deps.tar.gz when that archive was carried along
# (tools/collect-gpu-deps.sh packs them); GoogleTest may also be at /usr/src/googletest.
# TESSERA_CUDA_ARCHITECTURES overrides the architecture (default 90: H100/H200); TESSERA_JOBS the
# number of parallel compile jobs (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
full=0
if [ "${1:-}" = "--full" ]; then full=1; shift; fi
arch=${TESSERA_CUDA_ARCHITECTURES:-90}
jobs=${TESSERA_JOBS:-$(nproc)}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
nvcc --version | tail -n 1

deps=${TESSERA_DEPS:-/tmp/deps}
if [ -f .deps/gpu-deps.tar.gz ] && [ ! -d "$deps/usr" ]; then
  mkdir -p "$deps" && for a in .deps/*.tar.gz; do tar xzf "$a" -C "$deps"; done
fi
gtest=""
for d in "$deps/usr/src/googletest" /usr/src/googletest; do
  if [ -f "$d/CMakeLists.txt" ]; then gtest=$d; break; fi
done

if [ "$full" = 1 ]; then
  build=${1:-build-gpu}
  prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  [ -d "$deps/usr" ] && prefix="$prefix;$deps/usr"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix" \
    -DTESSERA_CUDA=ON -DTESSERA_CUDA_ARCHITECTURES="$arch" ${gtest:+-DTESSERA_GTEST_SOURCE_DIR="$gtest"}
  cmake --build "$build" --parallel "$jobs" --target tessera_tests
  exec "$build/bin/tessera_tests" --gtest_filter='CudaKernels.*'
fi

# Kernels only: a throwaway CMake project over kernels/CMakeLists.txt (the same flags as the
# real build) and the test file, linked with GoogleTest's main.
if [ -z "$gtest" ]; then
  echo "GoogleTest sources not found (set TESSERA_DEPS or carry .deps/gpu-deps.tar.gz)" >&2
  exit 2
fi
build=${1:-/tmp/tessera-gpu-kernels}
mkdir -p "$build/project"
cat > "$build/project/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.22)
project(tessera_cuda_kernel_check LANGUAGES C CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
add_subdirectory("$repo/kernels" kernels)
add_subdirectory("$gtest" googletest EXCLUDE_FROM_ALL)
add_executable(cuda_kernel_tests "$repo/tests/unit/test_cuda_kernels.cpp")
target_link_libraries(cuda_kernel_tests PRIVATE tessera_kernels_cuda gtest_main)
EOF
cmake -S "$build/project" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTESSERA_CUDA=ON -DTESSERA_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build "$build" --parallel "$jobs"
exec "$build/cuda_kernel_tests"
