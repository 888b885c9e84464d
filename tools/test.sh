#!/usr/bin/env bash
# tools/test.sh — the README's second command: install what is missing, build, and run the
# whole test suite with ctest (unit, ABI, loader, end-to-end, out-of-tree plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
cd build
ctest --output-on-failure --parallel 2 --timeout 900 "$@"
