#!/usr/bin/env bash
# tools/prepare_kjv.sh — the King James Bible (Debian's bible-kjv) as token shards for the
# token_shards dataset (configs/kjv_tokens.toml): dumps the text with `bible`, one verse per line,
# then `tessera data tokenize` trains a SentencePiece BPE model on it and writes llm.c shards.
# Everything goes into CACHE_DIR, never into the repository.
#
# usage: tools/prepare_kjv.sh [CACHE_DIR]     default ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/kjv
#   TESSERA=path/to/tessera (default build/bin/tessera), VOCAB_SIZE=8192, VAL_FRACTION=0.1
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/kjv}"
tessera="${TESSERA:-$root/build/bin/tessera}"
vocab="${VOCAB_SIZE:-8192}"
val_fraction="${VAL_FRACTION:-0.1}"

command -v bible >/dev/null || { echo "prepare_kjv.sh: no 'bible' program (Debian: apt install bible-kjv)" >&2; exit 1; }
[ -x "$tessera" ] || { echo "prepare_kjv.sh: no $tessera (build first: tools/build.sh)" >&2; exit 1; }
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
case "$cache/" in
  "$root"/*) echo "prepare_kjv.sh: $cache is inside the repository; data stays out of git" >&2; exit 1 ;;
esac

start=$(date +%s.%N)
# Genesis 1:1 to Revelation 22:21 is the whole Bible: 31102 verses, printed one per line as
# "Ge1:1 In the beginning God ..." (-f; no line wrapping without a width). The reference is cut off.
env -u COLUMNS bible -f Genesis1:1-Revelation22:21 | sed 's/^[^ ]* //' > "$cache/kjv.txt.tmp"
verses=$(wc -l < "$cache/kjv.txt.tmp")
if [ "$verses" -ne 31102 ]; then
  echo "prepare_kjv.sh: bible printed $verses verses, expected 31102" >&2
  exit 1
fi
mv "$cache/kjv.txt.tmp" "$cache/kjv.txt"
echo "kjv: $verses verses, $(wc -c < "$cache/kjv.txt") bytes -> $cache/kjv.txt"

"$tessera" data tokenize --out-dir "$cache" --name kjv --vocab-size "$vocab" --model-prefix "$cache/tokenizer" \
  --val-fraction "$val_fraction" "$cache/kjv.txt"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "prepare_kjv.sh: done in %.1f s\n", e - s }'
