"""An independent forward pass of a llama-architecture GGUF model, in numpy.

Used by tests/cli.rs to check `engine capture` against a second implementation
that shares no code with llama.cpp's compute graph: weights are dequantized
with the `gguf` package (llama.cpp's gguf-py, from PyPI) and everything is
computed in float64. llama.cpp quantizes activations to 8 bits before its
quantized matmuls, so the two differ by that rounding; the Rust test owns the
tolerances.

usage: python3 llama_forward.py MODEL.gguf CAPTURE.npz  ->  JSON on stdout
       python3 llama_forward.py MODEL.gguf PATCH.json   ->  JSON on stdout

The second form runs the tokens of PATCH.json ({"tokens", "layer",
"vector"}) with the residual stream after block `layer` replaced by `vector`
at the last token (ICL patching), and prints the next-token log-probabilities.
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def main(model_path, capture_path):
    reader = GGUFReader(model_path)
    weights = {
        t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(n) for n in reversed(t.shape)])
        for t in reader.tensors
    }
    n_layer = int(field(reader, "llama.block_count"))
    n_head = int(field(reader, "llama.attention.head_count"))
    n_head_kv = int(field(reader, "llama.attention.head_count_kv"))
    eps = float(field(reader, "llama.attention.layer_norm_rms_epsilon"))
    rope_base = float(field(reader, "llama.rope.freq_base"))

    patch = None
    if capture_path.endswith(".json"):
        with open(capture_path) as f:
            patch = json.load(f)
        tokens = np.array(patch["tokens"])
    else:
        capture = np.load(capture_path)
        tokens = capture["tokens"]
    T = len(tokens)

    def rms_norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x):  # x: [T, heads, head_dim]; llama.cpp's "normal" RoPE rotates adjacent pairs
        d = x.shape[-1]
        inv_freq = rope_base ** (-np.arange(0, d, 2) / d)
        angle = np.arange(T)[:, None] * inv_freq[None, :]  # [T, d/2]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    x = weights["token_embd.weight"][tokens]
    hidden, attention = [], []
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, weights[p + "attn_norm.weight"])
        q = (h @ weights[p + "attn_q.weight"].T).reshape(T, n_head, -1)
        k = (h @ weights[p + "attn_k.weight"].T).reshape(T, n_head_kv, -1)
        v = (h @ weights[p + "attn_v.weight"].T).reshape(T, n_head_kv, -1)
        q, k = rope(q), rope(k)
        head_dim = q.shape[-1]
        group = n_head // n_head_kv
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + mask
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        attention.append(probs)
        out = np.einsum("hqk,khd->qhd", probs, v).reshape(T, -1)
        x = x + out @ weights[p + "attn_output.weight"].T
        h = rms_norm(x, weights[p + "ffn_norm.weight"])
        gate = h @ weights[p + "ffn_gate.weight"].T
        up = h @ weights[p + "ffn_up.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * up) @ weights[p + "ffn_down.weight"].T
        if patch is not None and il == patch["layer"]:
            x = x.copy()
            x[-1] = np.array(patch["vector"], dtype=np.float64)
        hidden.append(x)
    final = rms_norm(x, weights["output_norm.weight"])
    out_w = weights.get("output.weight", weights["token_embd.weight"])
    logits = final[-1] @ out_w.T
    if patch is not None:
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        json.dump({"logprobs": [float(v) for v in logprobs]}, sys.stdout)
        return

    ours = capture["hidden"].astype(np.float64)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    result = {
        "tokens": T,
        "hidden_relative_error": [rel(ours[il], hidden[il]) for il in range(n_layer)],
        # The same comparison against the reference's next block: if layers
        # were shifted by one, these would be the small ones.
        "hidden_relative_error_vs_next_layer": [rel(ours[il], hidden[il + 1]) for il in range(n_layer - 1)],
        "attention_max_abs_error": [
            float(np.abs(capture["attention"][il].astype(np.float64) - attention[il]).max()) for il in range(n_layer)
        ],
        "final_norm_relative_error": rel(capture["final_norm"].astype(np.float64), final),
        "top_token_engine": int(np.argmax(capture["logits_last"])),
        "top_token_reference": int(np.argmax(logits)),
        "logits_correlation": float(np.corrcoef(capture["logits_last"].astype(np.float64), logits)[0, 1]),
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
