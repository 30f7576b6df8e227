"""The competitor a user would otherwise write: Hugging Face transformers
capturing the same prompts (hidden states and attention of every layer, then
a greedy answer), for `engine bench --pipeline` to compare against.

The GGUF weights are dequantized to float32 (gguf-py) and loaded into
transformers' LlamaForCausalLM, so both tools run the same model on the same
token ids (written by `engine bench --pipeline --dump-prompts FILE`). Like a
careful user, it keeps only what the analyses need (the last token's hidden
state per layer, the attention mass of the last token on two spans) and
computes nothing else; the engine's time also includes every analysis and
the report, so the comparison favours this script.

usage: python3 scripts/bench_transformers.py MODEL.gguf PROMPTS.json [--dtype float32|bfloat16]  ->  JSON
needs: pip install torch transformers gguf numpy

--dtype bfloat16 halves the weights' memory, for models whose float32 weights
do not fit (Llama-2 7B: 27 GB in float32, 13.5 GB in bfloat16). Each tensor is
dequantized and converted on its own, and the model is built without
allocating weights first, so the peak is about one copy of the weights.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def unpermute(w, n_head):
    # llama.cpp's converter interleaves the rotary halves of Q and K for its
    # "normal" RoPE; transformers rotates halves: undo the permutation.
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load(model_path, dtype):
    reader = GGUFReader(model_path)
    tensors = {t.name: t for t in reader.tensors}
    shape = {name: [int(n) for n in reversed(t.shape)] for name, t in tensors.items()}
    n_layer = int(field(reader, "llama.block_count"))
    n_head = int(field(reader, "llama.attention.head_count"))
    n_head_kv = int(field(reader, "llama.attention.head_count_kv"))

    def w(name, heads=None):
        # One tensor at a time: dequantized to float32, unpermuted, converted.
        t = tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape[name])
        if heads is not None:
            a = unpermute(a, heads)
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    config = LlamaConfig(
        vocab_size=shape["token_embd.weight"][0],
        hidden_size=shape["token_embd.weight"][1],
        intermediate_size=shape["blk.0.ffn_up.weight"][0],
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head_kv,
        rms_norm_eps=float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field(reader, "llama.rope.freq_base")),
        max_position_embeddings=int(field(reader, "llama.context_length")),
        tie_word_embeddings="output.weight" not in tensors,
        attn_implementation="eager",  # the only implementation that returns attention
        torch_dtype=dtype,
    )
    state = {"model.embed_tokens.weight": w("token_embd.weight"), "model.norm.weight": w("output_norm.weight")}
    state["lm_head.weight"] = w("output.weight") if "output.weight" in tensors else state["model.embed_tokens.weight"]
    for i in range(n_layer):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        state[q + "self_attn.q_proj.weight"] = w(p + "attn_q.weight", n_head)
        state[q + "self_attn.k_proj.weight"] = w(p + "attn_k.weight", n_head_kv)
        state[q + "self_attn.v_proj.weight"] = w(p + "attn_v.weight")
        state[q + "self_attn.o_proj.weight"] = w(p + "attn_output.weight")
        state[q + "mlp.gate_proj.weight"] = w(p + "ffn_gate.weight")
        state[q + "mlp.up_proj.weight"] = w(p + "ffn_up.weight")
        state[q + "mlp.down_proj.weight"] = w(p + "ffn_down.weight")
        state[q + "input_layernorm.weight"] = w(p + "attn_norm.weight")
        state[q + "post_attention_layernorm.weight"] = w(p + "ffn_norm.weight")
    # Built on the meta device, so that no randomly initialised copy of the
    # weights is allocated; the state then becomes the parameters as it is.
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    # The rotary frequencies are a buffer outside the state: compute them.
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config)
    return model.to(dtype).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the GGUF file (llama architecture)")
    parser.add_argument("prompts", help="the JSON of engine bench --pipeline --dump-prompts")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(torch.get_num_threads())
    started = time.time()
    model = load(args.model, dtype)
    load_s = time.time() - started
    spec = json.load(open(args.prompts))
    max_new = spec["max_new_tokens"]
    # The answer is the first line: like the engine, stop after a newline,
    # and do not run the final token (nobody reads its logits).
    newline = set(spec.get("newline_tokens", []))
    kept = []
    started = time.time()
    with torch.no_grad():
        for prompt in spec["prompts"]:
            ids = torch.tensor([prompt["tokens"]])
            out = model(ids, output_hidden_states=True, output_attentions=True, use_cache=True)
            hidden = torch.stack([h[0, -1] for h in out.hidden_states[1:]]).float().numpy()
            mass = None
            if prompt["spans"]:
                (r0, r1), (d0, d1) = prompt["spans"]
                mass = [(a[0, :, -1, r0:r1].sum(-1).float().numpy(), a[0, :, -1, d0:d1].sum(-1).float().numpy()) for a in out.attentions]
            past, token, answer = out.past_key_values, out.logits[0, -1].argmax(), []
            while len(answer) < max_new:
                answer.append(int(token))
                if len(answer) == max_new or int(token) in newline:
                    break
                step = model(token.view(1, 1), past_key_values=past, use_cache=True)
                past, token = step.past_key_values, step.logits[0, -1].argmax()
            kept.append((hidden, mass, answer))
    run_s = time.time() - started
    print(json.dumps({
        "prompts": len(kept),
        "load_seconds": round(load_s, 2),
        "run_seconds": round(run_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "first_answer": kept[0][2] if kept else [],
    }))


if __name__ == "__main__":
    main()
