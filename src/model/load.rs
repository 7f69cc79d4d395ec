//! Building a Model from a GGUF file: configuration from the metadata,
//! weights checked against it and repacked for the kernels.

use anyhow::{anyhow, bail, Result};

use crate::gguf::{GgufFile, TensorInfo};
use crate::kernels::matmul::Matrix;
use crate::kernels::ops::{Rope, RopeStyle};
use crate::kernels::pool::ComputePool;
use crate::kernels::quant::{repack, Packed, PANEL};
use crate::kernels::{Arithmetic, Isa};

use super::attention::{MAX_GROUP, MAX_HEAD_DIM};
use super::llama::{Layer, Model, ModelConfig, Stacked};

/// What sets an architecture apart from llama's layout and metadata.
struct Architecture {
    name: &'static str,
    rope: RopeStyle,
    /// Biases on the Q, K and V projections.
    qkv_bias: bool,
    /// RMSNorm of each query and key head before RoPE.
    qk_norm: bool,
}

const ARCHITECTURES: &[Architecture] = &[
    Architecture { name: "llama", rope: RopeStyle::Normal, qkv_bias: false, qk_norm: false },
    Architecture { name: "mistral", rope: RopeStyle::Normal, qkv_bias: false, qk_norm: false },
    Architecture { name: "qwen2", rope: RopeStyle::Neox, qkv_bias: true, qk_norm: false },
    Architecture { name: "qwen3", rope: RopeStyle::Neox, qkv_bias: false, qk_norm: true },
];

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch = f.get_str("general.architecture")?.to_string();
        let Some(a) = ARCHITECTURES.iter().find(|a| a.name == arch) else {
            let names: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name).collect();
            bail!("{}: architecture {arch:?} is not supported (supported: {})", f.path.display(), names.join(", "));
        };
        let key = |k: &str| format!("{arch}.{k}");
        let dim = f.get_u64(&key("embedding_length"))? as usize;
        let heads = f.get_u64(&key("attention.head_count"))? as usize;
        let kv_heads = match f.get(&key("attention.head_count_kv")) {
            Some(_) => f.get_u64(&key("attention.head_count_kv"))? as usize,
            None => heads,
        };
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("{}: inconsistent attention shape: dim {dim}, {heads} heads, {kv_heads} KV heads", f.path.display());
        }
        // A head's width: the key length where the file gives one (then
        // the heads together may be wider than the embedding), else an
        // equal share of the embedding.
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => f.get_u64(&key("attention.key_length"))? as usize,
            None if dim.is_multiple_of(heads) => dim / heads,
            None => bail!("{}: inconsistent attention shape: dim {dim}, {heads} heads", f.path.display()),
        };
        if f.get(&key("attention.value_length")).is_some() && f.get_u64(&key("attention.value_length"))? as usize != head_dim {
            bail!("{}: value heads of another width than key heads are not supported", f.path.display());
        }
        let vocab = match f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(tokens) => tokens.len(),
            None => f.get_u64(&key("vocab_size"))? as usize,
        };
        let rope_dims = match f.get(&key("rope.dimension_count")) {
            Some(_) => f.get_u64(&key("rope.dimension_count"))? as usize,
            None => head_dim,
        };
        if head_dim > MAX_HEAD_DIM || rope_dims > head_dim || rope_dims % 2 != 0 || heads / kv_heads > MAX_GROUP {
            bail!(
                "{}: attention shape not supported: head dimension {head_dim} (at most {MAX_HEAD_DIM}), {rope_dims} rotary dimensions (even, within the head), {} query heads per KV head (at most {MAX_GROUP})",
                f.path.display(),
                heads / kv_heads
            );
        }
        Ok(ModelConfig {
            vocab,
            dim,
            layers: f.get_u64(&key("block_count"))? as usize,
            heads,
            kv_heads,
            head_dim,
            ffn: f.get_u64(&key("feed_forward_length"))? as usize,
            context_length: f.get_u64(&key("context_length"))? as usize,
            norm_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: if f.get(&key("rope.freq_base")).is_some() { f.get_f32(&key("rope.freq_base"))? } else { 10000.0 },
            rope_dims,
            rope_freq_scale: rope_freq_scale(f, &key)?,
            rope_style: a.rope,
            qkv_bias: a.qkv_bias,
            qk_norm: a.qk_norm,
            architecture: arch,
        })
    }
}

/// How RoPE's angles are scaled for a longer context: not at all, or
/// linearly (`rope.scaling.factor` times slower). Any other scaling is a
/// load error, never positions silently wrong.
fn rope_freq_scale(f: &GgufFile, key: &dyn Fn(&str) -> String) -> Result<f32> {
    let kind = match f.get(&key("rope.scaling.type")) {
        Some(_) => f.get_str(&key("rope.scaling.type"))?,
        None => "none",
    };
    let factor = match f.get(&key("rope.scaling.factor")) {
        Some(_) => f.get_f32(&key("rope.scaling.factor"))?,
        None => 1.0,
    };
    match kind {
        "none" => Ok(1.0),
        "linear" if factor > 0.0 => Ok(1.0 / factor),
        "linear" => bail!("{}: rope.scaling.factor {factor} must be positive", f.path.display()),
        other => bail!("{}: RoPE scaling {other:?} is not supported (supported: none, linear)", f.path.display()),
    }
}

struct Loader<'a> {
    f: &'a GgufFile,
    arithmetic: Arithmetic,
}

impl Loader<'_> {
    fn info(&self, name: &str, dims: &[usize]) -> Result<&TensorInfo> {
        let t = self.f.tensor(name).ok_or_else(|| anyhow!("{}: tensor {name} is missing", self.f.path.display()))?;
        let actual: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        if actual != dims {
            bail!("{}: tensor {name} has shape {actual:?}, expected {dims:?}", self.f.path.display());
        }
        Ok(t)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name, &[len])?;
        match repack(t.ttype, self.f.tensor_data(t), 1, len, self.arithmetic) {
            Packed::Float(v) => Ok(v),
            _ => bail!("{}: tensor {name} is {}, expected a float type", self.f.path.display(), t.ttype.name()),
        }
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = self.info(name, &[cols, rows])?;
        let block = t.ttype.block_elems().max(32);
        if !cols.is_multiple_of(block) {
            bail!("{}: tensor {name} has rows of {cols}, not a multiple of {block}", self.f.path.display());
        }
        Ok(Matrix { rows, cols, w: repack(t.ttype, self.f.tensor_data(t), rows, cols, self.arithmetic) })
    }

    /// Several matrices with the same columns, rows stacked: one matrix
    /// where they are of one format, else each apart.
    fn stacked(&self, names: &[(String, usize)], cols: usize) -> Result<Stacked> {
        let parts = names.iter().map(|(n, rows)| self.matrix(n, *rows, cols)).collect::<Result<Vec<_>>>()?;
        if parts[..parts.len() - 1].iter().any(|m| m.rows % PANEL != 0) {
            return Ok(Stacked::Parts(parts));
        }
        let rows: Vec<usize> = parts.iter().map(|m| m.rows).collect();
        Ok(match Packed::concat(parts.into_iter().map(|m| m.w).collect()) {
            Ok(w) => Stacked::Fused(Matrix { rows: rows.iter().sum(), cols, w }),
            Err(ws) => Stacked::Parts(ws.into_iter().zip(rows).map(|(w, rows)| Matrix { rows, cols, w }).collect()),
        })
    }
}

impl Model {
    pub fn load(f: &GgufFile, isa: Isa, arithmetic: Arithmetic, threads: usize) -> Result<Model> {
        let c = ModelConfig::from_gguf(f)?;
        let l = Loader { f, arithmetic };
        let (dim, q_dim, kv_dim) = (c.dim, c.q_dim(), c.kv_dim());
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm"), dim)?,
                wqkv: l.stacked(&[(n("attn_q"), q_dim), (n("attn_k"), kv_dim), (n("attn_v"), kv_dim)], dim)?,
                qkv_bias: if c.qkv_bias {
                    let b = |s: &str| format!("blk.{i}.{s}.bias");
                    let mut bias = l.vector(&b("attn_q"), q_dim)?;
                    bias.extend(l.vector(&b("attn_k"), kv_dim)?);
                    bias.extend(l.vector(&b("attn_v"), kv_dim)?);
                    Some(bias)
                } else {
                    None
                },
                qk_norm: if c.qk_norm {
                    Some((l.vector(&n("attn_q_norm"), c.head_dim)?, l.vector(&n("attn_k_norm"), c.head_dim)?))
                } else {
                    None
                },
                wo: l.matrix(&n("attn_output"), dim, q_dim)?,
                ffn_norm: l.vector(&n("ffn_norm"), dim)?,
                w_gate_up: l.stacked(&[(n("ffn_gate"), c.ffn), (n("ffn_up"), c.ffn)], dim)?,
                w_down: l.matrix(&n("ffn_down"), dim, c.ffn)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(_) => Some(l.matrix("output.weight", c.vocab, dim)?),
            None => None,
        };
        let parameters = f.tensors.iter().map(TensorInfo::elements).sum();
        Ok(Model {
            token_embd: l.matrix("token_embd.weight", c.vocab, dim)?,
            output_norm: l.vector("output_norm.weight", dim)?,
            output,
            layers,
            rope: Rope::scaled(
                c.rope_dims,
                c.rope_base,
                c.rope_style,
                match f.tensor("rope_freqs.weight") {
                    Some(_) => Some(l.vector("rope_freqs.weight", c.rope_dims / 2)?),
                    None => None,
                },
                c.rope_freq_scale,
            ),
            isa,
            arithmetic,
            pool: ComputePool::new(threads),
            parameters,
            config: c,
        })
    }
}
