//! Building a Model from a GGUF file: configuration from the metadata,
//! weights checked against it and repacked for the kernels.

use anyhow::{anyhow, bail, Result};

use crate::gguf::{GgufFile, TensorInfo, TensorType};
use crate::kernels::matmul::Matrix;
use crate::kernels::ops::{Rope, RopeStyle};
use crate::kernels::pool::ComputePool;
use crate::kernels::quant::{floats, repack, repack_bf16, Packed, PANEL};
use crate::kernels::{Arithmetic, Isa};

use super::attention::{MAX_GROUP, MAX_HEAD_DIM};
use super::bert::{Encoder, EncoderLayer, Norm, Pooling};
use super::llama::{Activation, Layer, Model, ModelConfig, SlidingWindow, Stacked};

/// What sets an architecture apart from llama's layout and metadata.
struct Architecture {
    name: &'static str,
    rope: RopeStyle,
    /// Biases on the Q, K and V projections.
    qkv_bias: bool,
    /// RMSNorm of each query and key head before RoPE.
    qk_norm: bool,
    /// Q, K and V in one tensor (`attn_qkv`), gate and up in one
    /// (`ffn_up`, twice the feed-forward's rows): Phi-3's.
    fused: bool,
    gemma: Option<Gemma>,
}

/// Gemma's layout: embeddings times sqrt(dim), norms after attention and
/// the feed-forward, GELU gating, queries scaled before attention, and
/// sliding-window layers; with llama.cpp's defaults for what a file may
/// leave out.
struct Gemma {
    /// Of each `swa_pattern` layers, the last attends to every position,
    /// the others to the window.
    swa_pattern: usize,
    /// The window where the file gives none (None: no windowed layers).
    default_window: Option<usize>,
    /// The windowed layers' RoPE base where the file gives none (None: the
    /// other layers').
    default_local_base: Option<f32>,
    /// The attention scores' soft cap (where the architecture has one) and
    /// the logits', where the file gives none.
    default_attn_softcap: Option<f32>,
    default_final_softcap: Option<f32>,
    /// Layers of the 27B model, whose queries are scaled by
    /// 1/sqrt(dim / heads) instead of 1/sqrt(head_dim).
    layers_27b: usize,
}

const LLAMA: Architecture =
    Architecture { name: "llama", rope: RopeStyle::Normal, qkv_bias: false, qk_norm: false, fused: false, gemma: None };

const ARCHITECTURES: &[Architecture] = &[
    LLAMA,
    Architecture { name: "mistral", ..LLAMA },
    Architecture { name: "qwen2", rope: RopeStyle::Neox, qkv_bias: true, ..LLAMA },
    Architecture { name: "qwen3", rope: RopeStyle::Neox, qk_norm: true, ..LLAMA },
    Architecture { name: "phi3", rope: RopeStyle::Neox, fused: true, ..LLAMA },
    Architecture {
        name: "gemma2",
        rope: RopeStyle::Neox,
        gemma: Some(Gemma {
            swa_pattern: 2,
            default_window: Some(4096),
            default_local_base: None,
            default_attn_softcap: Some(50.0),
            default_final_softcap: Some(30.0),
            layers_27b: 46,
        }),
        ..LLAMA
    },
    Architecture {
        name: "gemma3",
        rope: RopeStyle::Neox,
        qk_norm: true,
        gemma: Some(Gemma {
            swa_pattern: 6,
            default_window: None,
            default_local_base: Some(10000.0),
            default_attn_softcap: None,
            default_final_softcap: None,
            layers_27b: 62,
        }),
        ..LLAMA
    },
];

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch = f.get_str("general.architecture")?.to_string();
        if arch == ENCODER {
            return encoder_config(f);
        }
        let Some(a) = ARCHITECTURES.iter().find(|a| a.name == arch) else {
            let names: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name).chain([ENCODER]).collect();
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
        let layers = f.get_u64(&key("block_count"))? as usize;
        let rope_base = if f.get(&key("rope.freq_base")).is_some() { f.get_f32(&key("rope.freq_base"))? } else { 10000.0 };
        if head_dim > MAX_HEAD_DIM || rope_dims > head_dim || rope_dims % 2 != 0 || heads / kv_heads > MAX_GROUP {
            bail!(
                "{}: attention shape not supported: head dimension {head_dim} (at most {MAX_HEAD_DIM}), {rope_dims} rotary dimensions (even, within the head), {} query heads per KV head (at most {MAX_GROUP})",
                f.path.display(),
                heads / kv_heads
            );
        }
        let optional_f32 = |k: &str| match f.get(&key(k)) {
            Some(_) => f.get_f32(&key(k)).map(Some),
            None => Ok(None),
        };
        let (mut embed_scale, mut query_scale, mut sliding_window, mut attn_softcap, mut final_softcap) = (None, None, None, None, None);
        if let Some(g) = &a.gemma {
            embed_scale = Some((dim as f32).sqrt());
            let scaled_by = if layers == g.layers_27b { dim / heads } else { head_dim };
            query_scale = Some(1.0 / (scaled_by as f32).sqrt());
            let window = match f.get(&key("attention.sliding_window")) {
                Some(_) => Some(f.get_u64(&key("attention.sliding_window"))? as usize).filter(|&w| w > 0),
                None => g.default_window,
            };
            if let Some(window) = window {
                sliding_window = Some(SlidingWindow {
                    window,
                    layers: windowed_layers(f, &key, layers, g.swa_pattern)?,
                    rope_base: optional_f32("rope.freq_base_swa")?.or(g.default_local_base).unwrap_or(rope_base),
                });
            }
            let cap = |v: Option<f32>| v.filter(|&c| c > 0.0);
            attn_softcap = cap(if g.default_attn_softcap.is_some() {
                optional_f32("attn_logit_softcapping")?.or(g.default_attn_softcap)
            } else {
                None
            });
            final_softcap = cap(optional_f32("final_logit_softcapping")?.or(g.default_final_softcap));
        }
        Ok(ModelConfig {
            vocab,
            dim,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn: f.get_u64(&key("feed_forward_length"))? as usize,
            context_length: f.get_u64(&key("context_length"))? as usize,
            norm_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base,
            rope_dims,
            rope_freq_scale: rope_freq_scale(f, &key)?,
            rope_style: a.rope,
            qkv_bias: a.qkv_bias,
            qk_norm: a.qk_norm,
            fused: a.fused,
            embed_scale,
            query_scale,
            post_norms: a.gemma.is_some(),
            activation: if a.gemma.is_some() { Activation::Gelu } else { Activation::Silu },
            sliding_window,
            attn_softcap,
            final_softcap,
            architecture: arch,
            pooling: None,
        })
    }
}

/// The embedding models' architecture: BERT's encoder.
pub const ENCODER: &str = "bert";

/// A BERT file's configuration: heads all of one width, no RoPE, LayerNorm,
/// GELU, bidirectional attention, and its pooling.
fn encoder_config(f: &GgufFile) -> Result<ModelConfig> {
    let key = |k: &str| format!("{ENCODER}.{k}");
    let u = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
    let (dim, heads) = (u("embedding_length")?, u("attention.head_count")?);
    if heads == 0 || !dim.is_multiple_of(heads) || dim / heads > MAX_HEAD_DIM {
        bail!("{}: attention shape not supported: dim {dim}, {heads} heads", f.path.display());
    }
    if f.get(&key("attention.causal")).and_then(|v| v.as_bool()) == Some(true) {
        bail!("{}: a causal BERT is not supported", f.path.display());
    }
    let pooling = match f.get(&key("pooling_type")) {
        None => Pooling::Mean,
        Some(_) => match f.get_u64(&key("pooling_type"))? {
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            other => bail!("{}: pooling type {other} is not supported (supported: 1 mean, 2 cls)", f.path.display()),
        },
    };
    let vocab = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|t| t.len());
    Ok(ModelConfig {
        architecture: ENCODER.to_string(),
        vocab: vocab.ok_or_else(|| f.error("metadata tokenizer.ggml.tokens is missing"))?,
        dim,
        layers: u("block_count")?,
        heads,
        kv_heads: heads,
        head_dim: dim / heads,
        ffn: u("feed_forward_length")?,
        context_length: u("context_length")?,
        norm_eps: f.get_f32(&key("attention.layer_norm_epsilon"))?,
        rope_base: 0.0,
        rope_dims: 0,
        rope_style: RopeStyle::Normal,
        rope_freq_scale: 1.0,
        qkv_bias: true,
        qk_norm: false,
        fused: false,
        embed_scale: None,
        query_scale: None,
        post_norms: false,
        activation: Activation::Gelu,
        sliding_window: None,
        attn_softcap: None,
        final_softcap: None,
        pooling: Some(pooling),
    })
}

/// Which layers attend in the window: as the file lists them
/// (`attention.sliding_window_pattern`, one flag per layer), or the last of
/// every `pattern` layers (the file's number, else the architecture's)
/// attending fully.
fn windowed_layers(f: &GgufFile, key: &dyn Fn(&str) -> String, layers: usize, pattern: usize) -> Result<Vec<bool>> {
    let k = key("attention.sliding_window_pattern");
    let pattern = match f.get(&k) {
        None => pattern,
        Some(v) => match v.as_array() {
            Some(flags) => {
                let flags: Option<Vec<bool>> = flags.iter().map(|v| v.as_bool()).collect();
                match flags {
                    Some(flags) if flags.len() == layers => return Ok(flags),
                    _ => bail!("{}: {k} must be a number or {layers} flags", f.path.display()),
                }
            }
            None => f.get_u64(&k)? as usize,
        },
    };
    Ok((0..layers).map(|i| pattern == 0 || i % pattern < pattern - 1).collect())
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
    /// Float matrices as `Packed::Bf16`, for AMX: an encoder's layers in
    /// the fast order, whose pooled and normalized output bf16 keeps
    /// within 1e-4 of llama.cpp's (tests/embed.rs). A decoder's logits are
    /// held to tighter log-probabilities, so its matrices stay as they are.
    bf16: bool,
}

impl Loader<'_> {
    /// The RoPE of the file: Llama 3's frequency factors (`rope_freqs`), or
    /// Phi-3's for its original context (`rope_factors_short`; sequences
    /// are then held to that context, where llama.cpp's default context
    /// uses them too), with the file's attention factor on cos and sin.
    fn rope(&self, c: &mut ModelConfig) -> Result<Rope> {
        let half = c.rope_dims / 2;
        let factors = if self.f.tensor("rope_freqs.weight").is_some() {
            Some(self.vector("rope_freqs.weight", half)?)
        } else if self.f.tensor("rope_factors_short.weight").is_some() {
            let key = format!("{}.rope.scaling.original_context_length", c.architecture);
            if self.f.get(&key).is_some() {
                c.context_length = c.context_length.min(self.f.get_u64(&key)? as usize);
            }
            Some(self.vector("rope_factors_short.weight", half)?)
        } else {
            None
        };
        let key = format!("{}.rope.scaling.attn_factor", c.architecture);
        let attn_factor = if self.f.get(&key).is_some() { self.f.get_f32(&key)? } else { 1.0 };
        Ok(Rope::scaled(c.rope_dims, c.rope_base, c.rope_style, factors, c.rope_freq_scale).with_attn_factor(attn_factor))
    }

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
        floats(t.ttype, self.f.tensor_data(t))
            .ok_or_else(|| anyhow!("{}: tensor {name} is {}, expected a float type", self.f.path.display(), t.ttype.name()))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = self.info(name, &[cols, rows])?;
        let block = t.ttype.block_elems().max(32);
        if !cols.is_multiple_of(block) {
            bail!("{}: tensor {name} has rows of {cols}, not a multiple of {block}", self.f.path.display());
        }
        let data = self.f.tensor_data(t);
        let w = if self.bf16 && matches!(t.ttype, TensorType::F32 | TensorType::F16 | TensorType::BF16) {
            repack_bf16(t.ttype, data, rows, cols)
        } else {
            repack(t.ttype, data, rows, cols, self.arithmetic)
        };
        Ok(Matrix { rows, cols, w })
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

impl Loader<'_> {
    fn norm(&self, name: &str, len: usize) -> Result<Norm> {
        Ok(Norm { weight: self.vector(&format!("{name}.weight"), len)?, bias: self.vector(&format!("{name}.bias"), len)? })
    }

    /// Rows of a float table (positions, token types) as floats.
    fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let m = self.matrix(name, rows, cols)?;
        let mut out = vec![0f32; rows * cols];
        out.chunks_exact_mut(cols).enumerate().for_each(|(r, row)| m.w.row_f32(r, cols, row));
        Ok(out)
    }

    fn encoder(&self, c: &ModelConfig, pooling: Pooling) -> Result<Encoder> {
        let dim = c.dim;
        let layers = (0..c.layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}");
                let mut qkv_bias = self.vector(&n("attn_q.bias"), dim)?;
                qkv_bias.extend(self.vector(&n("attn_k.bias"), dim)?);
                qkv_bias.extend(self.vector(&n("attn_v.bias"), dim)?);
                Ok(EncoderLayer {
                    wqkv: self.stacked(&[(n("attn_q.weight"), dim), (n("attn_k.weight"), dim), (n("attn_v.weight"), dim)], dim)?,
                    qkv_bias,
                    wo: self.matrix(&n("attn_output.weight"), dim, dim)?,
                    wo_bias: self.vector(&n("attn_output.bias"), dim)?,
                    attn_norm: self.norm(&n("attn_output_norm"), dim)?,
                    w_up: self.matrix(&n("ffn_up.weight"), c.ffn, dim)?,
                    up_bias: self.vector(&n("ffn_up.bias"), c.ffn)?,
                    w_down: self.matrix(&n("ffn_down.weight"), dim, c.ffn)?,
                    down_bias: self.vector(&n("ffn_down.bias"), dim)?,
                    out_norm: self.norm(&n("layer_output_norm"), dim)?,
                })
            })
            .collect::<Result<_>>()?;
        let types = self.f.tensor("token_types.weight").map_or(1, |t| t.dims.get(1).copied().unwrap_or(1) as usize);
        Ok(Encoder {
            position_embd: self.table("position_embd.weight", c.context_length, dim)?,
            token_type: self.table("token_types.weight", types, dim)?[..dim].to_vec(),
            embd_norm: self.norm("token_embd_norm", dim)?,
            layers,
            pooling,
        })
    }
}

impl Model {
    pub fn load(f: &GgufFile, isa: Isa, arithmetic: Arithmetic, threads: usize) -> Result<Model> {
        let mut c = ModelConfig::from_gguf(f)?;
        let l = Loader { f, arithmetic, bf16: false };
        if let Some(pooling) = c.pooling {
            let layers = Loader { bf16: isa.amx() && arithmetic == Arithmetic::Fast, ..l };
            return Ok(Model {
                token_embd: l.matrix("token_embd.weight", c.vocab, c.dim)?,
                encoder: Some(layers.encoder(&c, pooling)?),
                output_norm: Vec::new(),
                output: None,
                layers: Vec::new(),
                rope: Rope::new(2, 10000.0, RopeStyle::Normal),
                rope_local: None,
                isa,
                arithmetic,
                pool: ComputePool::new(threads),
                parameters: f.tensors.iter().map(TensorInfo::elements).sum(),
                config: c,
            });
        }
        let (dim, q_dim, kv_dim) = (c.dim, c.q_dim(), c.kv_dim());
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let (wqkv, w_gate_up) = if c.fused {
                (
                    Stacked::Fused(l.matrix(&n("attn_qkv"), q_dim + 2 * kv_dim, dim)?),
                    Stacked::Fused(l.matrix(&n("ffn_up"), 2 * c.ffn, dim)?),
                )
            } else {
                (
                    l.stacked(&[(n("attn_q"), q_dim), (n("attn_k"), kv_dim), (n("attn_v"), kv_dim)], dim)?,
                    l.stacked(&[(n("ffn_gate"), c.ffn), (n("ffn_up"), c.ffn)], dim)?,
                )
            };
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm"), dim)?,
                wqkv,
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
                post_norms: if c.post_norms {
                    Some((l.vector(&n("post_attention_norm"), dim)?, l.vector(&n("post_ffw_norm"), dim)?))
                } else {
                    None
                },
                ffn_norm: l.vector(&n("ffn_norm"), dim)?,
                w_gate_up,
                w_down: l.matrix(&n("ffn_down"), dim, c.ffn)?,
            });
        }
        let output = match f.tensor("output.weight") {
            Some(_) => Some(l.matrix("output.weight", c.vocab, dim)?),
            None => None,
        };
        let rope = l.rope(&mut c)?;
        let rope_local =
            c.sliding_window.as_ref().filter(|w| w.rope_base != c.rope_base).map(|w| Rope::new(c.rope_dims, w.rope_base, c.rope_style));
        let parameters = f.tensors.iter().map(TensorInfo::elements).sum();
        Ok(Model {
            token_embd: l.matrix("token_embd.weight", c.vocab, dim)?,
            output_norm: l.vector("output_norm.weight", dim)?,
            output,
            layers,
            encoder: None,
            rope,
            rope_local,
            isa,
            arithmetic,
            pool: ComputePool::new(threads),
            parameters,
            config: c,
        })
    }
}
