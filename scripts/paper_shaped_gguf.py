#!/usr/bin/env python3
"""Paper-shaped random-weight GGUF models: the exact shapes of Llama-2 7B,
Llama-2 13B / Vicuna 13B and Llama-2 70B, random Q4_0 weights, and the
default model's tokenizer, so that the engine's costs (time, memory, bundle
sizes) at the study's scale can be measured on any machine. Random weights
give real costs, not real behaviour: answers are noise.

    python3 scripts/paper_shaped_gguf.py llama2-7b  --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf -o 7b.gguf
    python3 scripts/paper_shaped_gguf.py llama2-70b --blocks 8 --tokenizer tok.gguf -o 70b-8.gguf
    python3 scripts/paper_shaped_gguf.py --tokenizer-only --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf -o tok.gguf

Needs only Python 3 and numpy (the GPU machine has nothing else): the GGUF
file is read and written here, following the format's specification
(version 3, little-endian, 32-byte alignment).

- Shapes: block count, width, query heads, KV heads (grouped-query attention
  for 70B), FFN width, head dimension, RoPE base 10000, RMS-norm epsilon
  1e-5 and context 4096, as Meta's Llama-2 configs. The one deviation: the
  vocabulary is the tokenizer's (SmolLM2's 49 152 tokens rather than
  Llama-2's 32 000), so the embedding and output matrices are 54% taller;
  for 7B that is 0.2 B of 6.9 B parameters.
- Weights: every matrix is Q4_0 (as `llama-quantize Q4_0` writes a release,
  output included), each block of 32 weights a random 4-bit code with the
  scale that gives the weights a standard deviation of 1/sqrt(fan-in), so
  activations stay finite through 80 blocks; norms are 1 (f32).
- Deterministic: the bytes are a function of the shape, `--seed` and the
  tokenizer file (each tensor has its own seeded stream).
- `--blocks N` keeps the first N blocks (and says so in `general.name`), so
  that a 70B-wide slice fits a 24 GB machine.
- `--tokenizer-only` writes a GGUF of the tokenizer's metadata alone (a few
  MB): what travels to a machine that cannot fetch the default model.
"""

import argparse
import pathlib
import struct
import sys
import zlib

import numpy as np

SHAPES = {
    # blocks, width, heads, kv heads, ffn width (Meta's config.json)
    "llama2-7b": (32, 4096, 32, 32, 11008),
    "llama2-13b": (40, 5120, 40, 40, 13824),
    "vicuna-13b": (40, 5120, 40, 40, 13824),
    "llama2-70b": (80, 8192, 64, 8, 28672),
}
NAMES = {
    "llama2-7b": "Llama-2 7B",
    "llama2-13b": "Llama-2 13B",
    "vicuna-13b": "Vicuna 13B v1.3",
    "llama2-70b": "Llama-2 70B",
}

ALIGNMENT = 32
GGML_F32, GGML_Q4_0 = 0, 2
FILE_TYPE_MOSTLY_Q4_0 = 2
Q4_0_BLOCK, Q4_0_BYTES = 32, 18

# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# --- reading: only the metadata (the tokenizer's keys) -----------------------

class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self):
        n = self.take("<Q")
        raw = self.data[self.at:self.at + n]
        self.at += n
        return raw.decode("utf-8")

    def value(self, kind):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            inner, n = self.take("<I"), self.take("<Q")
            if inner in SCALAR:
                fmt = SCALAR[inner]
                size = struct.calcsize(fmt)
                items = list(struct.unpack_from(f"<{n}{fmt[1]}", self.data, self.at))
                self.at += n * size
            else:
                items = [self.value(inner) for _ in range(n)]
            return (inner, items)
        return self.take(SCALAR[kind])


def read_metadata(path):
    """The metadata of the GGUF at `path`: {key: (type, value)}."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:4] != b"GGUF":
            fail(f"`{path}` is not a GGUF file (no GGUF magic): pass a .gguf model")
        # Metadata sits at the front; tokenizer arrays are a few MB.
        data = head + f.read(64 << 20)
    r = Reader(data)
    r.at = 4
    version = r.take("<I")
    if version not in (2, 3):
        fail(f"`{path}` is GGUF version {version}; this script reads versions 2 and 3")
    r.take("<Q")  # tensor count
    kv_count = r.take("<Q")
    meta = {}
    for _ in range(kv_count):
        key = r.string()
        kind = r.take("<I")
        meta[key] = (kind, r.value(kind))
    return meta


# --- writing -----------------------------------------------------------------

def pack_string(s):
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def pack_value(kind, value):
    if kind == STRING:
        return pack_string(value)
    if kind == ARRAY:
        inner, items = value
        out = [struct.pack("<IQ", inner, len(items))]
        if inner in SCALAR:
            out.append(struct.pack(f"<{len(items)}{SCALAR[inner][1]}", *items))
        else:
            out.extend(pack_value(inner, item) for item in items)
        return b"".join(out)
    return struct.pack(SCALAR[kind], value)


def padding(n):
    return (-n) % ALIGNMENT


def tensor_plan(blocks, width, heads, kv_heads, ffn, vocab):
    """(name, ne (innermost first), type, fan-in) of every tensor, in the
    order llama.cpp's converter writes them."""
    head_dim = width // heads
    kv_width = kv_heads * head_dim
    plan = [("token_embd.weight", (width, vocab), GGML_Q4_0, width)]
    for b in range(blocks):
        p = f"blk.{b}."
        plan += [
            (p + "attn_norm.weight", (width,), GGML_F32, 0),
            (p + "attn_q.weight", (width, width), GGML_Q4_0, width),
            (p + "attn_k.weight", (width, kv_width), GGML_Q4_0, width),
            (p + "attn_v.weight", (width, kv_width), GGML_Q4_0, width),
            (p + "attn_output.weight", (width, width), GGML_Q4_0, width),
            (p + "ffn_norm.weight", (width,), GGML_F32, 0),
            (p + "ffn_gate.weight", (width, ffn), GGML_Q4_0, width),
            (p + "ffn_up.weight", (width, ffn), GGML_Q4_0, width),
            (p + "ffn_down.weight", (ffn, width), GGML_Q4_0, ffn),
        ]
    plan += [
        ("output_norm.weight", (width,), GGML_F32, 0),
        ("output.weight", (width, vocab), GGML_Q4_0, width),
    ]
    return plan


def nbytes(ne, kind):
    count = int(np.prod(ne))
    if kind == GGML_F32:
        return 4 * count
    if ne[0] % Q4_0_BLOCK:
        fail(f"a Q4_0 row must be a multiple of {Q4_0_BLOCK} wide, not {ne[0]}")
    return count // Q4_0_BLOCK * Q4_0_BYTES


def write_tensor(f, name, ne, kind, fan_in, seed):
    if kind == GGML_F32:
        f.write(np.ones(int(np.prod(ne)), dtype="<f4").tobytes())
        return
    # Uniform 4-bit codes q in 0..15 give weights d·(q − 8) with standard
    # deviation d·√((16² − 1)/12 + 0.25) ≈ 4.62·d.
    scale = np.float16(1.0 / (4.62 * np.sqrt(fan_in)))
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    n_blocks = int(np.prod(ne)) // Q4_0_BLOCK
    chunk = 1 << 20  # blocks per write: 18 MB
    for start in range(0, n_blocks, chunk):
        n = min(chunk, n_blocks - start)
        blocks = np.empty((n, Q4_0_BYTES), dtype=np.uint8)
        blocks[:, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        blocks[:, 2:] = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        f.write(blocks.tobytes())


def write_gguf(path, meta, plan, seed):
    infos, offset = [], 0
    for name, ne, kind, _ in plan:
        infos.append(pack_string(name) + struct.pack("<I", len(ne))
                     + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", kind, offset))
        size = nbytes(ne, kind)
        offset += size + padding(size)
    header = [b"GGUF", struct.pack("<IQQ", 3, len(plan), len(meta))]
    header += [pack_string(k) + struct.pack("<I", kind) + pack_value(kind, v)
               for k, (kind, v) in meta.items()]
    header += infos
    head = b"".join(header)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(head + b"\0" * padding(len(head)))
        for name, ne, kind, fan_in in plan:
            write_tensor(f, name, ne, kind, fan_in, seed)
            f.write(b"\0" * padding(nbytes(ne, kind)))
    tmp.replace(path)
    return offset + len(head) + padding(len(head))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", nargs="?", choices=sorted(SHAPES),
                    help="the model whose shape to copy")
    ap.add_argument("--tokenizer", required=True, type=pathlib.Path,
                    help="a GGUF whose tokenizer to copy (the default model, or a --tokenizer-only file)")
    ap.add_argument("-o", "--out", required=True, type=pathlib.Path, help="the GGUF to write")
    ap.add_argument("--blocks", type=int, help="keep only the first N blocks")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random weights (default 1)")
    ap.add_argument("--tokenizer-only", action="store_true",
                    help="write only the tokenizer's metadata (a few MB, for carrying)")
    args = ap.parse_args()

    if args.out.exists() and args.out.is_dir():
        fail(f"`{args.out}` is a folder: pass the path of the .gguf file to write")
    source = read_metadata(args.tokenizer)
    tokenizer = {k: v for k, v in source.items() if k.startswith("tokenizer.")}
    if "tokenizer.ggml.tokens" not in tokenizer:
        fail(f"`{args.tokenizer}` has no tokenizer (no tokenizer.ggml.tokens): pass the default model")
    vocab = len(tokenizer["tokenizer.ggml.tokens"][1][1])

    if args.tokenizer_only:
        meta = {"general.architecture": (STRING, "tokenizer"),
                "general.name": (STRING, f"tokenizer of {args.tokenizer.name}")}
        meta.update(tokenizer)
        size = write_gguf(args.out, meta, [], args.seed)
        print(f"wrote {args.out}: the tokenizer of {args.tokenizer.name} ({vocab} tokens, {size / 1e6:.1f} MB)")
        return
    if args.shape is None:
        fail("name the shape to copy: " + ", ".join(sorted(SHAPES)))

    blocks, width, heads, kv_heads, ffn = SHAPES[args.shape]
    if args.blocks is not None:
        if not 1 <= args.blocks <= blocks:
            fail(f"--blocks {args.blocks}: {NAMES[args.shape]} has {blocks} blocks; pass 1 to {blocks}")
        kept = args.blocks
    else:
        kept = blocks
    name = f"{NAMES[args.shape]} shape, random Q4_0 weights"
    if kept < blocks:
        name += f", first {kept} of {blocks} blocks"
    meta = {
        "general.architecture": (STRING, "llama"),
        "general.name": (STRING, name),
        "general.file_type": (U32, FILE_TYPE_MOSTLY_Q4_0),
        "general.alignment": (U32, ALIGNMENT),
        "llama.vocab_size": (U32, vocab),
        "llama.context_length": (U32, 4096),
        "llama.embedding_length": (U32, width),
        "llama.block_count": (U32, kept),
        "llama.feed_forward_length": (U32, ffn),
        "llama.attention.head_count": (U32, heads),
        "llama.attention.head_count_kv": (U32, kv_heads),
        "llama.rope.dimension_count": (U32, width // heads),
        "llama.rope.freq_base": (F32, 10000.0),
        "llama.attention.layer_norm_rms_epsilon": (F32, 1e-5),
    }
    meta.update(tokenizer)
    plan = tensor_plan(kept, width, heads, kv_heads, ffn, vocab)
    params = sum(int(np.prod(ne)) for _, ne, _, _ in plan)
    size = write_gguf(args.out, meta, plan, args.seed)
    print(f"wrote {args.out}: {name}; {kept} blocks × width {width}, {heads} heads over "
          f"{kv_heads} KV heads, FFN {ffn}, vocabulary {vocab}; "
          f"{params / 1e9:.2f} B parameters, {size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
