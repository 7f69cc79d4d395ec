//! Building the `tokenizers` BPE pipeline and the per-token byte table from
//! a GGUF vocabulary.

use anyhow::{anyhow, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as Normalizers};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf::GgufFile;

pub(super) struct Built {
    pub tokenizer: tokenizers::Tokenizer,
    pub pieces: Vec<Vec<u8>>,
}

/// The regex llama 3 style vocabularies split words with before BPE.
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Pre-tokenizer names (llama.cpp's) that split digits singly before GPT-2's regex.
const DIGITS_THEN_GPT2: &[&str] = &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"];

fn regex_split(pattern: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| anyhow!("pre-tokenizer regex: {e}"))?;
    Ok(split.into())
}

/// GPT-2's byte-to-character table, inverted: vocabulary characters to bytes.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u8> = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut map: std::collections::HashMap<char, u8> = printable.iter().map(|&b| (b as char, b)).collect();
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable.contains(&b) {
            map.insert(char::from_u32(256 + n).expect("valid code point"), b);
            printable.push(b);
            n += 1;
        }
    }
    map
}

pub(super) fn byte_level_bpe(f: &GgufFile, tokens: &[&str]) -> Result<Built> {
    let merges =
        f.get("tokenizer.ggml.merges").and_then(|v| v.as_array()).ok_or_else(|| f.error("metadata tokenizer.ggml.merges is missing"))?;
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.as_str()
                .and_then(|s| s.split_once(' '))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| f.error("tokenizer.ggml.merges holds a malformed merge"))
        })
        .collect::<Result<_, _>>()?;
    let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    let pre = f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let byte_level = ByteLevel::new(false, false, true);
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre {
        "default" | "gpt2" | "gpt-2" => (byte_level.into(), false),
        p if DIGITS_THEN_GPT2.contains(&p) => (Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(), false),
        "llama3" | "llama-v3" | "llama-bpe" => {
            (Sequence::new(vec![regex_split(LLAMA3_SPLIT)?, ByteLevel::new(false, false, false).into()]).into(), true)
        }
        "qwen2" => (Sequence::new(vec![regex_split(QWEN2_SPLIT)?, ByteLevel::new(false, false, false).into()]).into(), false),
        other => return Err(f.error(format!("pre-tokenizer {other:?} is not supported")).into()),
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| f.error(format!("cannot build BPE: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    let decoder = byte_decoder();
    // Characters outside the byte table (only in special tokens) keep their UTF-8.
    let pieces = tokens
        .iter()
        .map(|t| {
            let mut bytes = Vec::with_capacity(t.len());
            for c in t.chars() {
                match decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            bytes
        })
        .collect();
    Ok(Built { tokenizer, pieces })
}

/// A SentencePiece vocabulary as a BPE: merges come from the scores (a merge
/// that makes a higher-scoring token ranks first), unknown bytes fall back to
/// `<0xXX>` tokens, spaces are `▁`.
pub(super) fn sentencepiece(f: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<Built> {
    let scores: Vec<f32> = match f.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
        Some(a) if a.len() == tokens.len() => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
        _ => return Err(f.error("metadata tokenizer.ggml.scores is missing or has the wrong length").into()),
    };
    let vocab: ahash::AHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] != 1 {
            continue;
        }
        for (cut, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(cut);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = f.get("tokenizer.ggml.unknown_token_id").and_then(|v| v.as_u64()).map(|i| tokens[i as usize].to_string());
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| f.error(format!("cannot build BPE: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let add_space_prefix = f.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()).unwrap_or(true);
    let replace = Replace::new(" ", "▁").map_err(|e| anyhow!("{e}"))?;
    let normalizer = if add_space_prefix {
        Normalizers::new(vec![Prepend::new("▁".into()).into(), replace.into()])
    } else {
        Normalizers::new(vec![replace.into()])
    };
    tokenizer.with_normalizer(Some(normalizer));
    let pieces = tokens
        .iter()
        .map(|t| match byte_token(t) {
            Some(b) => vec![b],
            None => t.replace('▁', " ").into_bytes(),
        })
        .collect();
    Ok(Built { tokenizer, pieces })
}

/// `<0xAB>` -> 0xAB.
fn byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
