//! Tokenizer built from GGUF metadata: GPT-2 style byte-level BPE (with the
//! pre-tokenizer `tokenizer.ggml.pre` names), SentencePiece style
//! (`tokenizer.ggml.model = llama`), Gemma 4's BPE (`gemma4`) and WordPiece
//! (`bert`). The `tokenizers` crate does the BPE
//! merging; special-token splitting and byte-exact decoding are ours, so that
//! text from a user is never parsed into control tokens.

mod build;
pub mod stream;
pub mod template;

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{anyhow, Result};

use crate::gguf::GgufFile;

/// Token types as GGUF stores them.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Finds the texts of some tokens in text, longest first.
struct Matcher {
    texts: AhoCorasick,
    ids: Vec<u32>,
}

impl Matcher {
    fn new(tokens: &[&str], ids: Vec<u32>) -> Result<Option<Matcher>, aho_corasick::BuildError> {
        if ids.is_empty() {
            return Ok(None);
        }
        let texts = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(ids.iter().map(|&i| tokens[i as usize]))?;
        Ok(Some(Matcher { texts, ids }))
    }
}

pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// The bytes each token stands for (control tokens: their text).
    pieces: Vec<Vec<u8>>,
    control: Vec<bool>,
    /// Control and user-defined tokens, matched in text when parsing specials.
    specials: Option<Matcher>,
    /// User-defined tokens alone (whitespace runs, for one), matched in any
    /// text, as llama.cpp does: they are vocabulary, not control.
    user_defined: Option<Matcher>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    /// Ends every input where special tokens are added (BERT's [SEP]).
    pub sep_last: Option<u32>,
    /// EOS and EOT: the tokens that end generation.
    end: Vec<u32>,
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let tokens = f
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .ok_or_else(|| f.error("metadata tokenizer.ggml.tokens is missing"))?;
        let tokens: Vec<&str> = tokens
            .iter()
            .map(|t| t.as_str().ok_or_else(|| f.error("tokenizer.ggml.tokens holds a non-string")))
            .collect::<Result<_, _>>()?;
        let types: Vec<i64> = match f.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) if a.len() == tokens.len() => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            Some(_) => return Err(f.error("tokenizer.ggml.token_type length differs from tokens").into()),
            None => vec![1; tokens.len()],
        };
        let kind = f.get_str("tokenizer.ggml.model")?;
        let built = match kind {
            "gpt2" => build::byte_level_bpe(f, &tokens)?,
            "llama" => build::sentencepiece(f, &tokens, &types)?,
            "bert" => build::word_piece(f, &tokens, &types)?,
            "gemma4" => build::gemma4_bpe(f, &tokens)?,
            other => {
                return Err(f.error(format!("tokenizer model {other:?} is not supported (supported: gpt2, llama, bert, gemma4)")).into())
            }
        };
        let control: Vec<bool> = types.iter().map(|&t| t == TYPE_CONTROL).collect();
        let of_types = |wanted: &[i64]| -> Vec<u32> {
            (0..tokens.len() as u32).filter(|&i| wanted.contains(&types[i as usize]) && !tokens[i as usize].is_empty()).collect()
        };
        let special_ids = of_types(&[TYPE_CONTROL, TYPE_USER_DEFINED]);
        let mut pieces = built.pieces;
        for &i in &special_ids {
            pieces[i as usize] = tokens[i as usize].as_bytes().to_vec();
        }
        let matcher = |ids: Vec<u32>| Matcher::new(&tokens, ids).map_err(|e| anyhow!("{}: special tokens: {e}", f.path.display()));
        let (specials, user_defined) = (matcher(special_ids)?, matcher(of_types(&[TYPE_USER_DEFINED]))?);
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < tokens.len() => Ok(Some(i as u32)),
                    _ => Err(f.error(format!("metadata {key} is not a valid token id")).into()),
                },
            }
        };
        let (eos, eot) = (id("tokenizer.ggml.eos_token_id")?, id("tokenizer.ggml.eot_token_id")?);
        Ok(Tokenizer {
            end: eos.into_iter().chain(eot).collect(),
            bpe: built.tokenizer,
            pieces,
            control,
            specials,
            user_defined,
            bos: match id("tokenizer.ggml.bos_token_id")? {
                None if kind == "bert" => id("tokenizer.ggml.cls_token_id")?,
                bos => bos,
            },
            eos,
            eot,
            add_bos: f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(built.add_bos),
            // llama.cpp ends a WordPiece input with its separator whatever
            // the metadata says.
            sep_last: if kind == "bert" { id("tokenizer.ggml.seperator_token_id")? } else { None },
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Tokens of `text`. With `parse_special`, control and user-defined
    /// token texts in it become those tokens; without, all of it is plain text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let matcher = if parse_special { &self.specials } else { &self.user_defined };
        let mut plain_from = 0;
        if let Some(m) = matcher {
            for hit in m.texts.find_iter(text) {
                self.encode_plain(&text[plain_from..hit.start()], &mut out)?;
                out.push(m.ids[hit.pattern().as_usize()]);
                plain_from = hit.end();
            }
        }
        self.encode_plain(&text[plain_from..], &mut out)?;
        Ok(out)
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let enc = self.bpe.encode(text, false).map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Prepends BOS where the model's metadata asks for it, and appends the
    /// separator where the tokenizer ends inputs with one.
    pub fn with_specials(&self, mut tokens: Vec<u32>) -> Vec<u32> {
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if tokens.first() != Some(&bos) {
                tokens.insert(0, bos);
            }
        }
        tokens.extend(self.sep_last);
        tokens
    }

    /// The bytes a token stands for; control tokens render as nothing.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        match self.pieces.get(id as usize) {
            Some(_) if self.control[id as usize] => &[],
            Some(p) => p,
            None => &[],
        }
    }

    /// A control token: markup of the chat format, never text.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The token's text as it appears in the vocabulary (control tokens too).
    pub fn token_text(&self, id: u32) -> String {
        self.pieces.get(id as usize).map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default()
    }

    /// Whole-sequence decoding (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes a token stands for, a control token's being its text: as
    /// a tokenizer route shows a prompt back.
    pub fn written_bytes(&self, id: u32) -> &[u8] {
        match self.pieces.get(id as usize) {
            Some(p) if self.control[id as usize] => p,
            _ => self.token_bytes(id),
        }
    }

    /// Decoding with control tokens written as their text.
    pub fn decode_with_controls(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.written_bytes(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Tokens that end generation: EOS and EOT.
    pub fn end_tokens(&self) -> &[u32] {
        &self.end
    }
}
