#!/usr/bin/env python3
# tools/unigram_entropy.py — the baseline a language model must beat: the unigram entropy of the
# training tokens, and the cross-entropy of the validation tokens under that unigram model
# (add-one smoothed), in nats per token, read from llm.c token shards (v1 uint16 / v7 uint32).
#   tools/unigram_entropy.py --train '~/.cache/tessera/kjv/kjv_train_*.bin' --val '~/.cache/tessera/kjv/kjv_val_*.bin' --vocab 8192
import argparse, array, glob, math, os, struct, sys


def read_tokens(pattern):
    files = sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        sys.exit(f"unigram_entropy: no shard matches {pattern}")
    for path in files:
        with open(path, "rb") as f:
            header = struct.unpack("<256i", f.read(1024))
            magic, version, count = header[0], header[1], header[2]
            if magic != 20240520 or version not in (1, 7):
                sys.exit(f"unigram_entropy: {path} is not an llm.c shard (magic {magic}, version {version})")
            tokens = array.array("H" if version == 1 else "I")
            tokens.frombytes(f.read(count * tokens.itemsize))
            if len(tokens) != count:
                sys.exit(f"unigram_entropy: {path} holds {len(tokens)} of its {count} tokens")
            yield from tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--vocab", type=int, required=True)
    a = ap.parse_args()
    counts = [0] * a.vocab
    for t in read_tokens(a.train):
        counts[t] += 1
    n = sum(counts)
    entropy = -sum(c / n * math.log(c / n) for c in counts if c)
    smoothed = [(c + 1) / (n + a.vocab) for c in counts]
    val = [math.log(smoothed[t]) for t in read_tokens(a.val)]
    cross = -sum(val) / len(val)
    print(f"train tokens {n}, unigram entropy {entropy:.4f} nats/token (perplexity {math.exp(entropy):.1f}); "
          f"val tokens {len(val)}, cross-entropy under the train unigram {cross:.4f} nats/token "
          f"(perplexity {math.exp(cross):.1f})")


if __name__ == "__main__":
    main()
