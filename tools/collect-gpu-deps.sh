#!/usr/bin/env bash
# tools/collect-gpu-deps.sh — what to carry to the GPU machine (it has no package registry):
# ../shared/gpu/collect-deps.sh's archive, plus the headers it does not pack that Tessera's
# build needs (CLI11, header-only: Debian's libcli11-dev). Usage, from the repo root:
#   bash tools/collect-gpu-deps.sh .deps      (tools/gpu_kernel_check.sh unpacks .deps/*.tar.gz)
set -euo pipefail
out=${1:-.deps}
bash ../shared/gpu/collect-deps.sh "$out"   # run from the repo root, beside ../shared
paths=()
for p in usr/include/CLI usr/share/cmake/CLI11; do
  [ -e "/$p" ] && paths+=("$p")
done
[ ${#paths[@]} -gt 0 ] || { echo "CLI11 is not installed here (apt install libcli11-dev)" >&2; exit 1; }
tar czf "$out/cli11.tar.gz" -C / "${paths[@]}"
ls -l "$out/cli11.tar.gz"
