#!/usr/bin/env python3
"""Tiny random-weight GGUF models of six llama.cpp architectures (llama,
qwen2, qwen3, granite, gemma2, gemma3), 8.5 to 8.7 MB each, with the default
model's tokenizer, so that the engine's tests can check per architecture
that the attention it recomputes from the RoPE'd queries and keys
(`Qcur-N`, `Kcur-N`) equals llama.cpp's own probabilities (`kq_soft_max-N`,
flash attention off). Random weights: the answers are noise, the attention
arithmetic is real.

    python3 scripts/tiny_arch_gguf.py gemma2 --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf -o /tmp/gemma2.gguf
    python3 scripts/tiny_arch_gguf.py qwen3 --tokenizer tok.gguf -o qwen3.gguf --seed 7 --blocks 2
    python3 scripts/tiny_arch_gguf.py gemma3 --tokenizer tok.gguf -o gemma3.gguf --sliding-window 4
    python3 scripts/tiny_arch_gguf.py llama --tokenizer tok.gguf -o tied.gguf --paired-output-rows

Needs only Python 3 and numpy: the GGUF is read and written with the
functions of scripts/paper_shaped_gguf.py (version 3, little-endian,
32-byte alignment).

Shared by all: width 64, FFN 128, 4 query heads over 2 KV heads
(grouped-query attention), 3 blocks (`--blocks N`), RoPE (base 10000 unless
said below), RMS norms, context 2048 (a 512-token prompt fits), the
tokenizer's keys (every `tokenizer.*` key of `--tokenizer`, so the
vocabulary is its 49 152 tokens), the output matrix tied to the token
embedding (float16, 6.3 MB of the file; the tokenizer is 2.2 MB; everything
else float32). Tensor names, shapes and metadata keys are those that the
architecture's `load_arch_hparams` and `load_arch_tensors` in llama.cpp's
src/models/<arch>.cpp read: no tensor more, none less.

- llama: head size 16; the plain softmax(q·k/√d).
- qwen2: head size 16; q, k and v biases (`attn_q.bias` ...), added before
  RoPE.
- qwen3: head size 32 (`key_length`, so 4 × 32 ≠ width 64); Q and K RMS
  norms per head (`attn_q_norm`, `attn_k_norm`) before RoPE.
- granite: head size 16; `granite.attention.scale` 0.09 (not 1/√16 = 0.25),
  with `logit_scale` 8 (the one multiplier llama.cpp requires),
  `embedding_scale` 12 and `residual_scale` 0.22, like Granite 3.
- gemma2: head size 32 (`key_length`); attention logit soft-capping at 5
  (`gemma2.attn_logit_softcapping`; the raw scaled logits have a standard
  deviation near 6, so 40% of them exceed the cap), final logit
  soft-capping 30, a sliding window of `--sliding-window` tokens (default 8)
  on every other layer (llama.cpp's default pattern 2, no pattern key:
  layers 0 and 2 slide, 1 is global), the post-attention and post-FFN
  norms, GELU FFN.
- gemma3: head size 32; Q/K norms; a sliding window of `--sliding-window`
  tokens (default 8) with `gemma3.attention.sliding_window_pattern` 2 (so
  3 blocks have both kinds: layers 0 and 2 slide, 1 is global), RoPE base
  1e6 on global layers and 10000 on sliding ones (as Gemma 3), post norms.

`--paired-output-rows` makes the rows of the output matrix come in
identical pairs (row 2i+1 = row 2i; the tokenizer is unchanged): through
the tied embedding, tokens 2i and 2i+1 then get the same logit bit for bit,
so every greedy choice is an exact tie (a test of the engine's top-two logit
gaps). The rows are the token embedding's, so paired tokens also share an
input embedding; float16 keeps them identical.

Weights are normal with standard deviation 1/√fan-in, except the query and
key matrices (and, for qwen3 and gemma3, the Q/K norm weights), scaled so
that the attention logits spread over a few units: attention far from
uniform, activations finite. Norm weights are 1 (gemma's converter stores
1 + w, so 1 is gemma's neutral norm too), except the Q/K norms (1.2 to 2.2,
per channel). Deterministic: the bytes are a function of the architecture,
the options and the tokenizer file (each tensor has its own seeded stream).
"""

import argparse
import pathlib
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import paper_shaped_gguf as psg  # noqa: E402  (the GGUF reader and writer)

from paper_shaped_gguf import ALIGNMENT, F32, STRING, U32, fail, padding  # noqa: E402

GGML_F32, GGML_F16 = 0, 1
FILE_TYPE_MOSTLY_F16 = 1

# `gemma` (the first Gemma) is one the engine does not recompute: it is
# here for the tests of the automatic path (llama.cpp's own probabilities,
# flash attention off) and of a refused `--flash-attn on`.
ARCHITECTURES = ("llama", "qwen2", "qwen3", "granite", "gemma2", "gemma3", "gemma")
SLIDING = ("gemma2", "gemma3")

N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_CTX = 64, 128, 4, 2, 2048
HEAD_DIM = {"gemma": 16, "llama": 16, "qwen2": 16, "qwen3": 32, "granite": 16, "gemma2": 32, "gemma3": 32}
DEFAULT_BLOCKS, DEFAULT_WINDOW = 3, 8

# The gain on the query and key matrices: with RMS-normed inputs, q and k
# elements have standard deviation `gain`, so q·k/√d has about gain_q·gain_k.
QK_GAIN = {
    "gemma": 1.75,     # as llama
    "llama": 1.75,     # logits ~ N(0, 3)
    "qwen2": 1.5,      # plus the biases
    "qwen3": 1.0,      # normalised away; the Q/K norm weights set the spread
    "granite": 2.9,    # 0.09·q·k: ~ N(0, 3); at 1/√16 it would be ~ N(0, 8.4)
    "gemma2": 2.45,    # (q/√d)·k ~ N(0, 6) before the cap at 5
    "gemma3": 1.0,     # normalised away
}
GRANITE = {"attention.scale": 0.09, "logit_scale": 8.0, "embedding_scale": 12.0,
           "residual_scale": 0.22}
GEMMA2_ATTN_CAP, GEMMA2_FINAL_CAP = 5.0, 30.0


def tensor_plan(arch, blocks, vocab):
    """(name, ne (innermost first), ggml type, how to fill it) of every
    tensor llama.cpp's `load_arch_tensors` creates for `arch`, in the
    converter's order. A fill is ("normal", std), ("const", v) or
    ("uniform", lo, hi)."""
    d = HEAD_DIM[arch]
    q_width, kv_width = N_HEAD * d, N_HEAD_KV * d
    gain = QK_GAIN[arch]
    ones = ("const", 1.0)
    plan = [("token_embd.weight", (N_EMBD, vocab), GGML_F16, ("normal", 1.0))]
    for b in range(blocks):
        p = f"blk.{b}."
        plan.append((p + "attn_norm.weight", (N_EMBD,), GGML_F32, ones))
        plan += [
            (p + "attn_q.weight", (N_EMBD, q_width), GGML_F32, ("normal", gain / np.sqrt(N_EMBD))),
            (p + "attn_k.weight", (N_EMBD, kv_width), GGML_F32, ("normal", gain / np.sqrt(N_EMBD))),
            (p + "attn_v.weight", (N_EMBD, kv_width), GGML_F32, ("normal", 1 / np.sqrt(N_EMBD))),
        ]
        if arch == "qwen2":
            plan += [
                (p + "attn_q.bias", (q_width,), GGML_F32, ("normal", 0.5)),
                (p + "attn_k.bias", (kv_width,), GGML_F32, ("normal", 0.5)),
                (p + "attn_v.bias", (kv_width,), GGML_F32, ("normal", 0.1)),
            ]
        if arch in ("qwen3", "gemma3"):
            plan += [
                (p + "attn_q_norm.weight", (d,), GGML_F32, ("uniform", 1.2, 2.2)),
                (p + "attn_k_norm.weight", (d,), GGML_F32, ("uniform", 1.2, 2.2)),
            ]
        plan.append((p + "attn_output.weight", (q_width, N_EMBD), GGML_F32,
                     ("normal", 1 / np.sqrt(q_width))))
        if arch in SLIDING:
            plan.append((p + "post_attention_norm.weight", (N_EMBD,), GGML_F32, ones))
        plan += [
            (p + "ffn_norm.weight", (N_EMBD,), GGML_F32, ones),
            (p + "ffn_gate.weight", (N_EMBD, N_FF), GGML_F32, ("normal", 1 / np.sqrt(N_EMBD))),
            (p + "ffn_up.weight", (N_EMBD, N_FF), GGML_F32, ("normal", 1 / np.sqrt(N_EMBD))),
            (p + "ffn_down.weight", (N_FF, N_EMBD), GGML_F32, ("normal", 1 / np.sqrt(N_FF))),
        ]
        if arch in SLIDING:
            plan.append((p + "post_ffw_norm.weight", (N_EMBD,), GGML_F32, ones))
    # No output.weight: every one of these architectures then uses the token
    # embedding (gemma2 never reads output.weight, and llama.cpp refuses a
    # file with a tensor it does not read: "wrong number of tensors").
    plan.append(("output_norm.weight", (N_EMBD,), GGML_F32, ones))
    return plan


def tensor_data(name, ne, kind, fill, seed):
    count = int(np.prod(ne))
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if fill[0] == "const":
        values = np.full(count, fill[1])
    elif fill[0] == "uniform":
        values = rng.uniform(fill[1], fill[2], size=count)
    else:
        values = rng.standard_normal(count) * fill[1]
    return values.astype("<f2" if kind == GGML_F16 else "<f4").tobytes()


def write_gguf(path, meta, tensors):
    """Write `tensors` [(name, ne, type, bytes)] with `meta` to `path`
    (through a .partial file, so a failure leaves nothing behind)."""
    infos, offset = [], 0
    for name, ne, kind, data in tensors:
        infos.append(psg.pack_string(name) + struct.pack("<I", len(ne))
                     + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", kind, offset))
        offset += len(data) + padding(len(data))
    header = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(meta))]
    header += [psg.pack_string(k) + struct.pack("<I", kind) + psg.pack_value(kind, v)
               for k, (kind, v) in meta.items()]
    header += infos
    head = b"".join(header)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(head + b"\0" * padding(len(head)))
            for _, _, _, data in tensors:
                f.write(data + b"\0" * padding(len(data)))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write `{path}`: {e.strerror or e}")
    return len(head) + padding(len(head)) + offset


def pair_rows(data, kind, ne):
    """`data` (a tensor of `ne`, rows of ne[0] values) with each odd row a
    copy of the even row before it."""
    rows = np.frombuffer(data, dtype="<f2" if kind == GGML_F16 else "<f4").reshape(ne[1], ne[0]).copy()
    rows[1::2] = rows[0:rows.shape[0] // 2 * 2:2]
    return rows.tobytes()


def metadata(arch, blocks, vocab, window, seed, tokenizer, paired=False):
    d = HEAD_DIM[arch]
    name = (f"Tiny random-weight {arch} (seed {seed}, {blocks} blocks, width {N_EMBD}): "
            f"for the engine's attention tests, answers are noise")
    if paired:
        name += "; output rows in identical pairs, every greedy choice a tie"
    a = arch
    meta = {
        "general.architecture": (STRING, arch),
        "general.name": (STRING, name),
        "general.file_type": (U32, FILE_TYPE_MOSTLY_F16),
        "general.alignment": (U32, ALIGNMENT),
        f"{a}.vocab_size": (U32, vocab),
        f"{a}.context_length": (U32, N_CTX),
        f"{a}.embedding_length": (U32, N_EMBD),
        f"{a}.block_count": (U32, blocks),
        f"{a}.feed_forward_length": (U32, N_FF),
        f"{a}.attention.head_count": (U32, N_HEAD),
        f"{a}.attention.head_count_kv": (U32, N_HEAD_KV),
        f"{a}.rope.dimension_count": (U32, d),
        f"{a}.rope.freq_base": (F32, 1e6 if arch == "gemma3" else 10000.0),
        f"{a}.attention.layer_norm_rms_epsilon": (F32, 1e-5 if arch in ("llama", "granite") else 1e-6),
    }
    if d * N_HEAD != N_EMBD:
        meta[f"{a}.attention.key_length"] = (U32, d)
        meta[f"{a}.attention.value_length"] = (U32, d)
    if arch == "granite":
        for key, value in GRANITE.items():
            meta[f"{a}.{key}"] = (F32, value)
    if arch == "gemma2":
        meta[f"{a}.attention.sliding_window"] = (U32, window)
        meta[f"{a}.attn_logit_softcapping"] = (F32, GEMMA2_ATTN_CAP)
        meta[f"{a}.final_logit_softcapping"] = (F32, GEMMA2_FINAL_CAP)
    if arch == "gemma3":
        meta[f"{a}.attention.sliding_window"] = (U32, window)
        meta[f"{a}.attention.sliding_window_pattern"] = (U32, 2)
        meta[f"{a}.rope.freq_base_swa"] = (F32, 10000.0)
    meta.update(tokenizer)
    return meta


def sliding_layers(arch, blocks):
    """The layers llama.cpp's set_swa_pattern(2) makes slide (il % 2 < 1)."""
    return [il for il in range(blocks) if arch in SLIDING and il % 2 == 0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", metavar="ARCH", help="one of " + ", ".join(ARCHITECTURES))
    ap.add_argument("--tokenizer", required=True, type=pathlib.Path,
                    help="a GGUF whose tokenizer to copy (the default model, or a tokenizer-only GGUF)")
    ap.add_argument("-o", "--out", required=True, type=pathlib.Path, help="the GGUF to write")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random weights (default 1)")
    ap.add_argument("--blocks", type=int, default=DEFAULT_BLOCKS,
                    help=f"number of blocks (default {DEFAULT_BLOCKS})")
    ap.add_argument("--sliding-window", type=int,
                    help=f"gemma2, gemma3: the sliding window in tokens (default {DEFAULT_WINDOW})")
    ap.add_argument("--paired-output-rows", action="store_true",
                    help="output rows in identical pairs (2i+1 = 2i): every greedy choice an exact tie")
    args = ap.parse_args()

    arch = args.arch
    if arch not in ARCHITECTURES:
        fail(f"unknown architecture `{arch}`: pass one of " + ", ".join(ARCHITECTURES))
    if not 1 <= args.blocks <= 64:
        fail(f"--blocks {args.blocks}: pass 1 to 64")
    if args.seed < 0:
        fail(f"--seed {args.seed}: pass a number 0 or above")
    window = DEFAULT_WINDOW
    if args.sliding_window is not None:
        if arch not in SLIDING:
            fail(f"--sliding-window applies to gemma2 and gemma3 only, not `{arch}`")
        if not 1 <= args.sliding_window <= N_CTX:
            fail(f"--sliding-window {args.sliding_window}: pass a window of 1 to {N_CTX} tokens")
        window = args.sliding_window
    if args.out.is_dir():
        fail(f"`{args.out}` is a folder: pass the path of the .gguf file to write")
    if not args.out.parent.is_dir():
        fail(f"`{args.out.parent}` is not a folder: the .gguf file cannot be written there")
    try:
        source = psg.read_metadata(args.tokenizer)
    except OSError as e:
        fail(f"cannot read `{args.tokenizer}`: {e.strerror or e}")
    except (struct.error, UnicodeDecodeError, KeyError, ValueError):
        fail(f"`{args.tokenizer}` is not a readable GGUF (its metadata is cut short or corrupt)")
    tokenizer = {k: v for k, v in source.items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in tokenizer:
        fail(f"`{args.tokenizer}` has no tokenizer (no tokenizer.ggml.tokens): pass the default model")
    vocab = len(tokenizer["tokenizer.ggml.tokens"][1][1])

    meta = metadata(arch, args.blocks, vocab, window, args.seed, tokenizer, args.paired_output_rows)
    plan = tensor_plan(arch, args.blocks, vocab)
    tensors = [(name, ne, kind, tensor_data(name, ne, kind, fill, args.seed))
               for name, ne, kind, fill in plan]
    if args.paired_output_rows:
        # The output matrix is the token embedding (no output.weight).
        tensors = [(name, ne, kind, pair_rows(data, kind, ne) if name == "token_embd.weight" else data)
                   for name, ne, kind, data in tensors]
    size = write_gguf(args.out, meta, tensors)
    params = sum(int(np.prod(ne)) for _, ne, _, _ in plan)
    d = HEAD_DIM[arch]
    extra = ""
    if arch in SLIDING:
        slide = sliding_layers(arch, args.blocks)
        extra = (f"; sliding window {window} tokens on layers {slide or 'none'}, "
                 f"global on {[il for il in range(args.blocks) if il not in slide] or 'none'}")
    if args.paired_output_rows:
        extra += "; output rows in identical pairs"
    print(f"wrote {args.out}: tiny random {arch}, {args.blocks} blocks × width {N_EMBD}, "
          f"{N_HEAD} heads of {d} over {N_HEAD_KV} KV heads, FFN {N_FF}, vocabulary {vocab}"
          f"{extra}; {params / 1e6:.2f} M parameters, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
