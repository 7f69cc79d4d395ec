//! Building the `tokenizers` BPE pipeline and the per-token byte table from
//! a GGUF vocabulary.

use anyhow::{anyhow, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::{BertNormalizer, Prepend, Replace, Sequence as Normalizers};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf::GgufFile;

pub(super) struct Built {
    pub tokenizer: tokenizers::Tokenizer,
    pub pieces: Vec<Vec<u8>>,
    /// Whether BOS starts a prompt when the metadata does not say
    /// (`tokenizer.ggml.add_bos_token`): llama.cpp's default for the kind.
    pub add_bos: bool,
}

/// The regex llama 3 style vocabularies split words with before BPE.
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Pre-tokenizer names (llama.cpp's) that split digits singly before GPT-2's regex.
const DIGITS_THEN_GPT2: &[&str] = &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"];
/// Llama 3's pre-tokenizer names: its regex, merges ignored, BOS added.
const LLAMA3: &[&str] = &["llama3", "llama-v3", "llama-bpe"];
/// Pre-tokenizer names (llama.cpp's) that split with GPT-2's regex alone.
const GPT2: &[&str] = &["default", "gpt2", "gpt-2", "mpt", "olmo"];

/// The regexes llama.cpp splits text with, one after another, for the
/// pre-tokenizers not covered above (`llama-vocab.cpp`, in its order).
fn split_regexes(pre: &str) -> Option<&'static [&'static str]> {
    Some(match pre {
        "deepseek-llm" => &[
            r"[\r\n]",
            r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
            r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
            r"\s+$",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}+",
        ],
        "deepseek-coder" => &[r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+", r"\p{N}"],
        "falcon" => {
            &[r"[\p{P}\$\+<=>\^~\|`]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"[0-9][0-9][0-9]"]
        }
        "qwen35" => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        _ => return None,
    })
}

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

/// The file's BPE merges, each split as llama.cpp splits it: at the first
/// space after its first character.
fn merges(f: &GgufFile) -> Result<Vec<(String, String)>> {
    let merges =
        f.get("tokenizer.ggml.merges").and_then(|v| v.as_array()).ok_or_else(|| f.error("metadata tokenizer.ggml.merges is missing"))?;
    merges
        .iter()
        .map(|m| {
            m.as_str()
                .and_then(|s| {
                    let first = s.chars().next()?.len_utf8();
                    let cut = first + s[first..].find(' ')?;
                    Some((s[..cut].to_string(), s[cut + 1..].to_string()))
                })
                .ok_or_else(|| f.error("tokenizer.ggml.merges holds a malformed merge").into())
        })
        .collect()
}

fn vocab(tokens: &[&str]) -> ahash::AHashMap<String, u32> {
    tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect()
}

pub(super) fn byte_level_bpe(f: &GgufFile, tokens: &[&str]) -> Result<Built> {
    let (merges, vocab) = (merges(f)?, vocab(tokens));
    let pre = f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let byte_level = ByteLevel::new(false, false, true);
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre {
        p if GPT2.contains(&p) => (byte_level.into(), false),
        p if DIGITS_THEN_GPT2.contains(&p) => (Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(), false),
        p if LLAMA3.contains(&p) => {
            (Sequence::new(vec![regex_split(LLAMA3_SPLIT)?, ByteLevel::new(false, false, false).into()]).into(), true)
        }
        "qwen2" => (Sequence::new(vec![regex_split(QWEN2_SPLIT)?, ByteLevel::new(false, false, false).into()]).into(), false),
        other => match split_regexes(other) {
            Some(regexes) => {
                let mut steps = regexes.iter().map(|r| regex_split(r)).collect::<Result<Vec<_>>>()?;
                steps.push(ByteLevel::new(false, false, false).into());
                (Sequence::new(steps).into(), false)
            }
            None => return Err(f.error(format!("pre-tokenizer {other:?} is not supported")).into()),
        },
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
    Ok(Built { tokenizer, pieces, add_bos: LLAMA3.contains(&pre) })
}

/// Gemma 4's vocabulary (`tokenizer.ggml.model = gemma4`), as llama.cpp
/// reads it: BPE over raw UTF-8 (no byte table) with the file's merges and
/// `<0xXX>` tokens for characters outside the vocabulary, spaces as `▁`,
/// the text split only between runs of newlines and the rest,
/// and a split that is a token taken whole (llama.cpp does so for runs of
/// newlines; the other splits merge into themselves anyway). BOS always.
pub(super) fn gemma4_bpe(f: &GgufFile, tokens: &[&str]) -> Result<Built> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab(tokens), merges(f)?)
        .ignore_merges(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| f.error(format!("cannot build BPE: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(Replace::new(" ", "▁").map_err(|e| anyhow!("{e}"))?));
    tokenizer.with_pre_tokenizer(Some(regex_split(r"[^\n]+|[\n]+")?));
    Ok(Built { tokenizer, pieces: spaced_pieces(tokens), add_bos: true })
}

/// The bytes of SentencePiece-style tokens: `▁` for a space, `<0xAB>` one byte.
fn spaced_pieces(tokens: &[&str]) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .map(|t| match byte_token(t) {
            Some(b) => vec![b],
            None => t.replace('▁', " ").into_bytes(),
        })
        .collect()
}

/// A SentencePiece vocabulary as a BPE: merges come from the scores (a merge
/// that makes a higher-scoring token ranks first), unknown bytes fall back to
/// `<0xXX>` tokens, spaces are `▁`.
pub(super) fn sentencepiece(f: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<Built> {
    let scores: Vec<f32> = match f.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
        Some(a) if a.len() == tokens.len() => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
        _ => return Err(f.error("metadata tokenizer.ggml.scores is missing or has the wrong length").into()),
    };
    let vocab = vocab(tokens);
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
    Ok(Built { tokenizer, pieces: spaced_pieces(tokens), add_bos: true })
}

/// A BERT WordPiece vocabulary as llama.cpp reads it: text decomposed
/// (NFD), its combining marks dropped, and lowercased, split at
/// whitespace, punctuation and CJK characters,
/// each word then the longest vocabulary pieces from its start. GGUF marks
/// a word's first piece with a leading `▁` and stores the pieces that
/// continue a word bare; WordPiece wants the first bare and the rest
/// behind `##`.
pub(super) fn word_piece(f: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<Built> {
    let unk = f
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| f.error("metadata tokenizer.ggml.unknown_token_id is missing"))?;
    let unk = tokens.get(unk as usize).ok_or_else(|| f.error("tokenizer.ggml.unknown_token_id is not a token"))?;
    let mut vocab = ahash::AHashMap::with_capacity(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        let piece = match tok.strip_prefix('▁') {
            _ if types[id] != 1 => tok.to_string(),
            Some(first) => first.to_string(),
            None => format!("##{tok}"),
        };
        // A first piece and a control token may share a text: the first id
        // wins, as in llama.cpp's text-to-token map.
        vocab.entry(piece).or_insert(id as u32);
    }
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk.to_string())
        .max_input_chars_per_word(usize::MAX)
        .build()
        .map_err(|e| f.error(format!("cannot build WordPiece: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, Some(true), true)));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    let pieces = tokens.iter().map(|t| t.replace('▁', " ").into_bytes()).collect();
    Ok(Built { tokenizer, pieces, add_bos: true })
}

/// `<0xAB>` -> 0xAB.
fn byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
