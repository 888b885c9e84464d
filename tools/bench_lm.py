#!/usr/bin/python3
"""tools/bench_lm.py — the GPT of Tessera's `gpt` encoder plugin in plain PyTorch eager, trained
the way a Tessera config trains it, timed per step: the reference side of tools/bench_lm.sh.

Same model (GPT-2: learned positions, LayerNorm, tanh GELU, tied embeddings, biases; parameter
names as the plugin's), same initial weights (--weights: a safetensors file written by
`tessera init`, tensors named "<encoder name>.<param name>"), same data (llm.c shards, windows of
T + 1 tokens in the order of Tessera's seeded loader: core/src/loader.cpp's epoch_permutation),
same optimizer (torch.optim.AdamW with [optimizer]'s lr, betas, eps and weight decay on every
parameter, as Tessera's kernels apply it; [schedule]'s warmup and decay; [train] clip_grad_norm
as a global-norm clip), mean cross-entropy over the B x T tokens in fp32.

Precision, as Tessera's backends mean it (plugins/precision):
  fp32           everything fp32, no autocast
  bf16           bf16 parameters and gradients for compute under bf16 autocast, an fp32 master
                 copy that AdamW (fp32 states) updates, copied back to bf16 (round to nearest)
  bf16_pure      the model in bf16, AdamW states bf16, no master, under bf16 autocast; plain
                 PyTorch rounds to nearest (Tessera rounds the update stochastically)
  bf16_autocast  PyTorch's own AMP idiom, not a Tessera backend: fp32 parameters, states and
                 gradients, forward under bf16 autocast

Every setting comes from --config (a Tessera TOML; tools/bench_lm.sh passes the Tessera run's
config.resolved.toml) unless given on the command line; without either, the gpt plugin's and
Tessera's defaults. Without --weights the model is initialised as the plugin documents (seeded).
Each step is timed with time.perf_counter around all of it (batch, zero_grad, forward, backward,
clip, step, reading the loss; synchronised on CUDA), after --warmup untimed steps.
Human-readable lines go to stderr; stdout gets one JSON line.

usage: tools/bench_lm.py [--config FILE] [--weights FILE] [--precision P] [--steps N] ...
       tools/bench_lm.py --help
"""
import argparse
import contextlib
import glob
import json
import math
import os
import resource
import struct
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PRECISIONS = ("fp32", "bf16", "bf16_pure", "bf16_autocast")


# ---- the model ---------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, d, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d, 3 * d)  # (3d, d): rows q, k, v
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):  # x (B, T, d)
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, h, T, dh)
        if hasattr(F, "scaled_dot_product_attention"):  # LibTorch >= 2.0, as the plugin's attention = "auto"
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, h, T, T)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.c_fc = nn.Linear(d, d_ff)
        self.c_proj = nn.Linear(d_ff, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, d, n_heads, d_ff, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = Attention(d, n_heads)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, d_ff)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Parameters in the plugin's order and names: wte, wpe, h.{i}.*, ln_f (lm head = wte)."""

    def __init__(self, vocab_size, max_seq_len, d, n_layers, n_heads, d_ff, eps):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d)   # (V, d)
        self.wpe = nn.Embedding(max_seq_len, d)  # (max_seq_len, d)
        self.h = nn.ModuleList(Block(d, n_heads, d_ff, eps) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d, eps=eps)

    def init_weights(self, std, n_layers):
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
            elif name.endswith(".weight") and ("ln_" in name):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:  # wte, wpe, c_attn, c_fc
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):  # ids (B, T) int64 -> logits (B, T, V)
        t = ids.size(1)
        x = self.wte(ids) + self.wpe.weight[:t]
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


# ---- safetensors (the format, read with the stdlib and numpy) ----------------------------------

def read_safetensors(path):
    """{name: fp32 torch tensor} of every tensor in the file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    kinds = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        arr = np.frombuffer(body[begin:end], dtype=kinds[info["dtype"]])
        if info["dtype"] == "BF16":  # the top half of an fp32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(info["shape"]))
    return out


def load_weights(model, path, prefix):
    tensors = read_safetensors(path)
    params = dict(model.named_parameters())
    missing = [n for n in params if prefix + n not in tensors]
    if missing:
        sys.exit(f"bench_lm.py: {path} has no {prefix}{missing[0]} ({len(missing)} parameters missing; "
                 f"it holds e.g. {sorted(tensors)[:3]}); is the encoder named '{prefix[:-1]}'?")
    with torch.no_grad():
        for n, p in params.items():
            t = tensors[prefix + n]
            if tuple(t.shape) != tuple(p.shape):
                sys.exit(f"bench_lm.py: {path}: {prefix}{n} is {list(t.shape)}, the model's is {list(p.shape)}")
            p.copy_(t)
    ignored = sorted(n for n in tensors if n.startswith(prefix) and n[len(prefix):] not in params)
    if ignored:
        log(f"not parameters of this model, ignored: {ignored}")


# ---- data: llm.c shards in Tessera's loader order -----------------------------------------------

class Mt19937_64:
    """std::mt19937_64, bit for bit (the engine Tessera's loader shuffles with)."""
    M64 = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.M64]
        for i in range(1, 312):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.M64)
        self.i = 312

    def __call__(self):
        if self.i >= 312:
            mt = self.mt
            for k in range(312):
                y = (mt[k] & 0xFFFFFFFF80000000) | (mt[(k + 1) % 312] & 0x7FFFFFFF)
                mt[k] = mt[(k + 156) % 312] ^ (y >> 1) ^ (0xB5026F5AA96619E9 if y & 1 else 0)
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        return y ^ (y >> 43)


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & Mt19937_64.M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & Mt19937_64.M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & Mt19937_64.M64
    return state, z ^ (z >> 31)


def epoch_permutation(n, seed, epoch):
    """core/src/loader.cpp's epoch_permutation: Fisher-Yates over mt19937_64, unbiased draws."""
    _, first = splitmix64(seed)
    _, s = splitmix64(first ^ epoch)
    rng = Mt19937_64(s)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        r = i + 1
        threshold = ((1 << 64) - r) % r
        while True:
            x = rng()
            if x >= threshold:
                break
        j = x % r
        perm[i], perm[j] = perm[j], perm[i]
    return perm


class Shards:
    """The training split of token_shards: windows of T + 1 tokens, stride T, never across shards."""

    def __init__(self, pattern, t, limit):
        files = sorted(glob.glob(os.path.expanduser(pattern)))
        if not files:
            sys.exit(f"bench_lm.py: no shard matches {pattern} (tools/prepare_kjv.sh writes the KJV ones)")
        self.t, self.tokens, self.first = t, [], [0]
        for path in files:
            head = np.fromfile(path, dtype="<i4", count=256)
            if head.size < 256 or head[0] != 20240520 or head[1] != 1:
                sys.exit(f"bench_lm.py: {path} is not an llm.c v1 token shard (magic 20240520, version 1)")
            tok = np.memmap(path, dtype="<u2", mode="r", offset=1024, shape=(int(head[2]),))
            self.tokens.append(tok)
            self.first.append(self.first[-1] + (tok.size - t - 1) // t + 1)
        self.size = self.first[-1] if limit <= 0 else min(self.first[-1], limit)

    def window(self, index):  # (T + 1,) int64
        k = int(np.searchsorted(self.first, index, side="right")) - 1
        start = (index - self.first[k]) * self.t
        return self.tokens[k][start:start + self.t + 1].astype(np.int64)


class Batches:
    """Batch i of the run: the rows Tessera's loader serves at step i + 1 (one rank, grad_accum 1)."""

    def __init__(self, shards, batch_size, seed, shuffle, drop_last):
        self.shards, self.b, self.seed, self.shuffle = shards, batch_size, seed, shuffle
        self.per_epoch = shards.size // batch_size if drop_last else -(-shards.size // batch_size)
        self.orders = {}

    def get(self, i, device):
        epoch, k = divmod(i, self.per_epoch)
        if self.shuffle and epoch not in self.orders:
            self.orders[epoch] = epoch_permutation(self.shards.size, self.seed, epoch)
        rows = range(k * self.b, min((k + 1) * self.b, self.shards.size))
        idx = [self.orders[epoch][r] if self.shuffle else r for r in rows]
        w = torch.from_numpy(np.stack([self.shards.window(j) for j in idx]))  # (B, T + 1)
        return w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)


# ---- settings -----------------------------------------------------------------------------------

# name: (section, key, Tessera's / the gpt plugin's default, type)
SETTINGS = {
    "seed": ("experiment", "seed", 0, int),
    "threads": ("experiment", "threads", 0, int),
    "device": ("experiment", "device", "cpu", str),
    "train": ("data", "train", "~/.cache/tessera/kjv/kjv_train_*.bin", str),
    "batch_size": ("data", "batch_size", 128, int),
    "seq_len": ("data", "seq_len", 1024, int),
    "stride": ("data", "stride", 0, int),
    "shuffle": ("data", "shuffle", True, bool),
    "drop_last": ("data", "drop_last", False, bool),
    "train_limit": ("data", "train_limit", 0, int),
    "vocab_size": ("encoder", "vocab_size", 50304, int),
    "max_seq_len": ("encoder", "max_seq_len", 1024, int),
    "d_model": ("encoder", "d_model", 768, int),
    "n_layers": ("encoder", "n_layers", 12, int),
    "n_heads": ("encoder", "n_heads", 12, int),
    "d_ff": ("encoder", "d_ff", 0, int),
    "norm_eps": ("encoder", "norm_eps", 1e-5, float),
    "init_std": ("encoder", "init_std", 0.02, float),
    "optimizer": ("optimizer", "name", "adamw", str),
    "lr": ("optimizer", "lr", 1e-3, float),
    "beta1": ("optimizer", "beta1", 0.9, float),
    "beta2": ("optimizer", "beta2", 0.999, float),
    "eps": ("optimizer", "eps", 1e-8, float),
    "weight_decay": ("optimizer", "weight_decay", 0.0, float),
    "warmup_steps": ("schedule", "warmup_steps", 0, int),
    "decay": ("schedule", "decay", "cosine", str),
    "min_lr_ratio": ("schedule", "min_lr_ratio", 0.0, float),
    "clip_grad_norm": ("train", "clip_grad_norm", 0.0, float),
    "epochs": ("train", "epochs", 1, int),
    "max_steps": ("train", "max_steps", 0, int),
    "grad_accum": ("train", "grad_accum", 1, int),
    "precision": ("precision", "plugin", "fp32", str),
}
# Encoder keys this script builds only at their default; any other value is refused.
FIXED = {"norm": "layernorm", "mlp": "gelu", "positions": "learned", "bias": True, "dropout": 0.0,
         "tie_embeddings": True, "checkpoint_activations": False}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Settings not given come from --config, else Tessera's defaults.")
    p.add_argument("--config", help="a Tessera TOML (e.g. a run's config.resolved.toml)")
    p.add_argument("--encoder", help="the [[encoder]] name: weight-name prefix (default: the gpt encoder's name)")
    p.add_argument("--weights", help="initial weights, safetensors as `tessera init` writes them")
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    p.add_argument("--total-steps", type=int, help="steps the lr schedule spans (default: the run's, as Tessera "
                                                   "counts them from [train] epochs and max_steps; without "
                                                   "max_steps, warmup + steps)")
    p.add_argument("--precision", choices=PRECISIONS, help="[precision] plugin, default fp32")
    p.add_argument("--device", choices=("cpu", "cuda"), help="[experiment] device, default cpu")
    for name, (section, key, default, kind) in SETTINGS.items():
        if name in ("precision", "device"):
            continue
        flag, where = "--" + name.replace("_", "-"), f"[{section}] {key}, default {default}"
        if kind is bool:
            p.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), metavar="BOOL", help=where)
        else:
            p.add_argument(flag, type=kind, metavar=name.upper(), help=where)
    return p.parse_args()


def resolve(args):
    """Command line > --config > defaults, into a plain dict."""
    cfg = {}
    if args.config:
        with open(args.config, "rb") as f:
            cfg = tomllib.load(f)
    encoders = cfg.get("encoder", [])
    gpt = [e for e in encoders if e.get("plugin") == "gpt"]
    if args.config and len(gpt) != 1:
        sys.exit(f"bench_lm.py: {args.config} must have exactly one [[encoder]] with plugin = \"gpt\"")
    enc = gpt[0] if gpt else {}
    for key, want in FIXED.items():
        if enc.get(key, want) != want:
            sys.exit(f"bench_lm.py: [[encoder]] {key} = {enc[key]!r}: this script builds only {key} = {want!r}")
    if enc.get("input", "input_ids") != "input_ids":
        log(f"note: the encoder reads '{enc['input']}'; this script feeds the dataset's input_ids")
    losses = cfg.get("loss", [])
    if any(l.get("plugin") != "cross_entropy" or l.get("label_smoothing", 0.0) != 0.0 for l in losses) or len(losses) > 1:
        sys.exit("bench_lm.py: the config must have one [[loss]] cross_entropy without label smoothing")
    s = {}
    for name, (section, key, default, _) in SETTINGS.items():
        table = enc if section == "encoder" else cfg.get(section, {})
        given = getattr(args, name, None)
        s[name] = given if given is not None else table.get(key, default)
    s["encoder"] = args.encoder or enc.get("name", "lm")
    s["d_ff"] = s["d_ff"] or 4 * s["d_model"]
    if s["threads"] <= 0:  # Tessera's rule for 0: OMP_NUM_THREADS, else all cores
        s["threads"] = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count()
    checks = [(s["optimizer"] == "adamw", f"optimizer {s['optimizer']!r}: only adamw"),
              (s["grad_accum"] == 1, "grad_accum must be 1"),
              (s["stride"] in (0, s["seq_len"]), "stride must be seq_len (no overlap)"),
              (s["precision"] in PRECISIONS, f"precision {s['precision']!r}: one of {PRECISIONS}"),
              (s["seq_len"] <= s["max_seq_len"], "seq_len exceeds max_seq_len"),
              (s["d_model"] % s["n_heads"] == 0, "d_model must divide into n_heads")]
    for ok, why in checks:
        if not ok:
            sys.exit("bench_lm.py: " + why)
    return s


def scheduled_lr(s, step):
    """core/src/options.cpp's scheduled_lr, step counted from 1."""
    peak, warmup, total = s["lr"], s["warmup_steps"], s["total_steps"]
    if step <= warmup:
        return peak * step / max(warmup, 1)
    if s["decay"] == "constant" or total <= warmup:
        return peak
    floor = peak * s["min_lr_ratio"]
    progress = min(1.0, (step - warmup) / (total - warmup))
    if s["decay"] == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


# ---- the run ------------------------------------------------------------------------------------

def main():
    args = parse_args()
    s = resolve(args)
    device = torch.device(s["device"])
    torch.set_num_threads(s["threads"])
    torch.manual_seed(s["seed"])
    precision = s["precision"]

    model = GPT(s["vocab_size"], s["max_seq_len"], s["d_model"], s["n_layers"], s["n_heads"], s["d_ff"], s["norm_eps"])
    model.init_weights(s["init_std"], s["n_layers"])
    if args.weights:
        load_weights(model, args.weights, s["encoder"] + ".")
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    # What AdamW updates: the model's own parameters, or (bf16) an fp32 master copy of them.
    master = None
    if precision in ("bf16", "bf16_pure"):
        if precision == "bf16":
            master = [p.detach().clone() for p in model.parameters()]  # fp32
        model.to(torch.bfloat16)
    opt_params = master if master is not None else list(model.parameters())
    opt = torch.optim.AdamW(opt_params, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"],
                            weight_decay=s["weight_decay"])
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision != "fp32"
                else contextlib.nullcontext)
    data = Batches(Shards(s["train"], s["seq_len"], s["train_limit"]), s["batch_size"], s["seed"], s["shuffle"],
                   s["drop_last"])
    # The schedule's length as Tessera's trainer counts it: the epochs' batches, capped by max_steps.
    s["total_steps"] = args.total_steps or (min(data.per_epoch * s["epochs"], s["max_steps"]) if s["max_steps"] > 0
                                            else args.warmup + args.steps)
    log(f"bench_lm.py: {n_params} parameters, {precision}, {device}, {s['threads']} threads, "
        f"B={s['batch_size']} T={s['seq_len']}, {args.warmup} + {args.steps} steps"
        + (f", weights {args.weights}" if args.weights else ", seeded init"))

    cuda = device.type == "cuda"
    losses, times = [], []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x, y = data.get(i, device)
        for g in opt.param_groups:
            g["lr"] = scheduled_lr(s, i + 1)
        model.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        if master is not None:
            for m, p in zip(master, model.parameters()):
                m.grad = p.grad.float()
        if s["clip_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(opt_params, s["clip_grad_norm"])
        opt.step()
        if master is not None:
            with torch.no_grad():
                for m, p in zip(master, model.parameters()):
                    p.copy_(m)
                    m.grad = None
        losses.append(loss.item())
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(1000.0 * (time.perf_counter() - t0))

    # Model state, counted from the tensors alive after the last step (its gradients included).
    params = list(model.parameters())
    states = [t for st in opt.state.values() for k, t in st.items() if torch.is_tensor(t) and k != "step"]
    state_bytes = {"parameters": nbytes(params), "gradients": nbytes(p.grad for p in params if p.grad is not None),
                   "master": nbytes(master) if master is not None else 0, "optimizer_states": nbytes(states)}
    state_bytes["total"] = sum(state_bytes.values())
    median = float(np.median(times)) if times else float("nan")
    out = {
        "framework": "pytorch", "torch": torch.__version__, "precision": precision, "device": device.type,
        "threads": s["threads"], "params": n_params, "batch_size": s["batch_size"], "seq_len": s["seq_len"],
        "warmup": args.warmup, "steps": args.steps,
        "step_ms_median": median, "step_ms_mean": float(np.mean(times)) if times else float("nan"),
        "tokens_per_s": s["batch_size"] * s["seq_len"] * 1000.0 / median,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None, "losses": losses,
        "step_ms": times,
        "model_state_bytes": state_bytes,
        "bytes_per_param": {k: v / n_params for k, v in state_bytes.items()},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: KiB
        "cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    log(f"bench_lm.py: median {median:.1f} ms/step, {out['tokens_per_s']:.0f} tokens/s, first loss {out['first_loss']:.6f}, "
        f"model state {out['bytes_per_param']['total']:.2f} bytes/param, peak RSS {out['peak_rss_mib']:.0f} MiB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
