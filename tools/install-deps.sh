#!/usr/bin/env bash
# tools/install-deps.sh — installs the Debian 12 packages Tessera needs, only those missing.
# Safe to run again; needs root or sudo when something is missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread          # LibTorch 1.13 (CPU); OpenBLAS, or fp32 runs ~10x slower
  libtomlplusplus-dev libspdlog-dev libboost-dev nlohmann-json3-dev libdlpack-dev zlib1g-dev
  libgtest-dev libgloo-dev                   # GoogleTest; Gloo headers for c10d ProcessGroupGloo
  dataset-fashion-mnist wordnet-base         # images; WordNet glosses for captions
  libspng-dev libturbojpeg0-dev libsndfile1-dev libsamplerate0-dev   # dataset readers: PNG, JPEG, audio
  libarchive-dev libsentencepiece-dev        # WebDataset tar shards; SentencePiece tokenizers
  libcli11-dev                               # the command line
  tuxpaint-stamps-default bible-kjv espeak-ng  # real image+text+audio stamps; English text; speech
  python3-matplotlib python3-numpy           # tools/plot_metrics, tools/read_safetensors.py
  python3-torch                              # tools/bench_lm.py: the plain-PyTorch side of tools/bench_lm.sh
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
