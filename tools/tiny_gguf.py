"""Writes a tiny random-weight GGUF with a real vocabulary, for testing an
architecture's forward pass against llama.cpp's on the same file (no small
real model of the architecture is to be had):

    python3 tools/tiny_gguf.py llama3 tests/data/vocab/ggml-vocab-llama-bpe.gguf tests/data/tiny/llama3.gguf
    python3 tools/tiny_gguf.py qwen3 tests/data/vocab/ggml-vocab-qwen2.gguf tests/data/tiny/qwen3.gguf
    python3 tools/tiny_gguf.py gemma2 tests/data/vocab/ggml-vocab-llama-spm.gguf tests/data/tiny/gemma2.gguf
    python3 tools/tiny_gguf.py phi3 tests/data/vocab/ggml-vocab-phi-3.gguf tests/data/tiny/phi3.gguf
    python3 tools/tiny_gguf.py llama-256 tests/data/vocab/ggml-vocab-llama-spm.gguf llama-256-f16.gguf

Needs the `gguf` and `numpy` packages. The weights come from a fixed seed,
so the same command writes the same file.
"""

import sys

import gguf
import numpy as np

# name -> architecture, shape, and what it has beyond llama's tensors
SHAPES = {
    # Llama 3's RoPE: per-dimension frequency factors (`rope_freqs.weight`).
    # V and the up projection in Q4_1, the rest Q8_0, as a Q4_K_M file mixes
    # types: they cannot be fused with Q and the gate.
    "llama3": dict(arch="llama", dim=32, heads=2, kv_heads=1, layers=2, ffn=64, rope_base=500000.0, freq_factors=True, q4_1=("attn_v", "ffn_up")),
    # Qwen 3: RMSNorm of each query and key head; heads wider together than
    # the embedding (attention.key_length).
    "qwen3": dict(arch="qwen3", dim=32, heads=4, kv_heads=2, head_dim=16, layers=2, ffn=64, rope_base=1000000.0, qk_norm=True),
    # Gemma 2: embeddings times sqrt(d), post-norms, GELU, soft-capped
    # attention scores and logits, and a window of 8 positions on every
    # other layer (the prompts are longer).
    "gemma2": dict(arch="gemma2", dim=32, heads=2, kv_heads=1, head_dim=16, layers=2, ffn=64, rope_base=10000.0, gemma=True, window=8, softcap=(5.0, 3.0)),
    # Phi-3: Q, K and V in one tensor, gate and up in one, and RoPE factors
    # for its original context (with long ones beside them).
    "phi3": dict(arch="phi3", dim=32, heads=2, kv_heads=2, layers=2, ffn=64, rope_base=10000.0, fused=True),
    # Llama with rows of 256, in F16: the source `llama-quantize` turns
    # into a file of each K-quant and IQ4 type (see tests/tiny.rs).
    # Embeddings scaled down, or the tied output would give each token
    # back with all the probability.
    "llama-256": dict(arch="llama", dim=256, heads=4, kv_heads=2, layers=2, ffn=512, rope_base=10000.0, f16=True, embd_scale=0.1),
}


def copy_vocabulary(writer, vocab_path):
    reader = gguf.GGUFReader(vocab_path)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if key == "tokenizer.ggml.token_type":
            writer.add_array(key, [int(v) for v in value])
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_float32(key, float(value))
    return len(reader.fields["tokenizer.ggml.tokens"].contents())


def main():
    name, vocab_path, out = sys.argv[1:4]
    s = SHAPES[name]
    rng = np.random.default_rng(20261202)
    arch, dim, heads, kv_heads, ffn = s["arch"], s["dim"], s["heads"], s["kv_heads"], s["ffn"]
    head_dim = s.get("head_dim", dim // heads)
    w = gguf.GGUFWriter(out, arch)
    vocab = copy_vocabulary(w, vocab_path)
    w.add_name(f"tiny-{name}")
    w.add_context_length(2048)
    w.add_embedding_length(dim)
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    if "head_dim" in s:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(s["rope_base"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    if "window" in s:
        w.add_sliding_window(s["window"])
    if "softcap" in s:
        w.add_float32(f"{arch}.attn_logit_softcapping", s["softcap"][0])
        w.add_float32(f"{arch}.final_logit_softcapping", s["softcap"][1])
    if s.get("fused"):
        w.add_uint32(f"{arch}.rope.scaling.original_context_length", 1024)
        w.add_float32(f"{arch}.rope.scaling.attn_factor", 1.1)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if s.get("f16") else gguf.LlamaFileType.MOSTLY_Q8_0)

    def matrix(tensor, rows, cols, scale):
        data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if s.get("f16"):
            w.add_tensor(tensor, data.astype(np.float16))
            return
        kind = gguf.GGMLQuantizationType.Q8_0
        if any(f".{name}." in tensor for name in s.get("q4_1", ())):
            kind = gguf.GGMLQuantizationType.Q4_1
        q = gguf.quants.quantize(data, kind)
        w.add_tensor(tensor, q, raw_shape=q.shape, raw_dtype=kind)

    def vector(tensor, values):
        w.add_tensor(tensor, np.asarray(values, dtype=np.float32))

    matrix("token_embd.weight", vocab, dim, s.get("embd_scale", 1.0))
    vector("output_norm.weight", 1.0 + 0.1 * rng.standard_normal(dim))
    if s.get("freq_factors"):
        # Llama 3.1's scaling: high frequencies kept, low ones slowed.
        vector("rope_freqs.weight", np.geomspace(1.0, 8.0, head_dim // 2))
    if s.get("fused"):
        vector("rope_factors_short.weight", np.geomspace(1.0, 3.0, head_dim // 2))
        vector("rope_factors_long.weight", np.geomspace(1.0, 30.0, head_dim // 2))
    for i in range(s["layers"]):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", 1.0 + 0.1 * rng.standard_normal(dim))
        if s.get("fused"):
            matrix(p + "attn_qkv.weight", (heads + 2 * kv_heads) * head_dim, dim, dim**-0.5)
        else:
            matrix(p + "attn_q.weight", heads * head_dim, dim, dim**-0.5)
            matrix(p + "attn_k.weight", kv_heads * head_dim, dim, dim**-0.5)
            matrix(p + "attn_v.weight", kv_heads * head_dim, dim, dim**-0.5)
        if s.get("qk_norm"):
            vector(p + "attn_q_norm.weight", 1.0 + 0.1 * rng.standard_normal(head_dim))
            vector(p + "attn_k_norm.weight", 1.0 + 0.1 * rng.standard_normal(head_dim))
        matrix(p + "attn_output.weight", dim, heads * head_dim, (heads * head_dim) ** -0.5)
        if s.get("gemma"):
            vector(p + "post_attention_norm.weight", 1.0 + 0.1 * rng.standard_normal(dim))
            vector(p + "post_ffw_norm.weight", 1.0 + 0.1 * rng.standard_normal(dim))
        vector(p + "ffn_norm.weight", 1.0 + 0.1 * rng.standard_normal(dim))
        if s.get("fused"):
            matrix(p + "ffn_up.weight", 2 * ffn, dim, dim**-0.5)
        else:
            matrix(p + "ffn_gate.weight", ffn, dim, dim**-0.5)
            matrix(p + "ffn_up.weight", ffn, dim, dim**-0.5)
        matrix(p + "ffn_down.weight", dim, ffn, ffn**-0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
