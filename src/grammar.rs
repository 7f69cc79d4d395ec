//! Constrained decoding: JSON Schema, any JSON object, regular expressions
//! and Lark grammars over a model's vocabulary, by llguidance. A model's
//! `Grammars` compiles each grammar once (cached by its source); every
//! sequence that asks for one gets its own `Constraint`, the matcher state
//! that says which tokens may come next and takes the token drawn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory, TokenParser};
use serde_json::{json, Value};

use crate::tokenizer::Tokenizer;

/// What a sequence's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (Ollama's `format: "json"`, OpenAI's `json_object`).
    JsonObject,
    /// A JSON Schema (draft 2020-12 as llguidance reads it).
    JsonSchema(Value),
    /// A regular expression the whole output matches.
    Regex(String),
    /// A grammar in llguidance's Lark syntax (`start` is the top rule).
    Lark(String),
}

impl GrammarSpec {
    /// A key naming the grammar exactly: the cache's.
    fn key(&self) -> String {
        match self {
            GrammarSpec::JsonObject => "json_object".into(),
            GrammarSpec::JsonSchema(s) => format!("json_schema:{s}"),
            GrammarSpec::Regex(r) => format!("regex:{r}"),
            GrammarSpec::Lark(g) => format!("lark:{g}"),
        }
    }

    fn top_level(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_layout(json!({ "type": "object" }))?),
            GrammarSpec::JsonSchema(s) => TopLevelGrammar::from_json_schema(laid_out_schema(s)?),
            GrammarSpec::Regex(r) => TopLevelGrammar::from_regex(r),
            GrammarSpec::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        })
    }
}

/// `schema` as a Lark expression (`%json {...}`): JSON it allows, laid out
/// as a `JsonSchema` grammar lays it out.
pub fn lark_json(schema: &Value) -> Result<String> {
    Ok(format!("%json {}", laid_out_schema(schema)?))
}

fn laid_out_schema(schema: &Value) -> Result<Value> {
    let mut schema = schema.clone();
    close_objects(&mut schema);
    with_layout(schema)
}

/// Objects with listed `properties` and no word on others get no others
/// (`additionalProperties: false`), as llama.cpp's grammars have it, so
/// Ollama's users get the objects they asked for: an open object lets a
/// small model wander into keys of its own until it runs out of tokens.
/// The parts of an `allOf` stay open, as closing each would leave no
/// object that satisfies them all.
fn close_objects(schema: &mut Value) {
    let Value::Object(node) = schema else { return };
    let open = ["additionalProperties", "patternProperties", "unevaluatedProperties"].iter().all(|k| !node.contains_key(*k));
    if open && node.get("properties").is_some_and(Value::is_object) {
        node.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in node.iter_mut() {
        match (key.as_str(), value) {
            ("properties" | "$defs" | "definitions" | "patternProperties" | "dependentSchemas", Value::Object(map)) => {
                map.values_mut().for_each(close_objects)
            }
            ("anyOf" | "oneOf" | "prefixItems", Value::Array(list)) => list.iter_mut().for_each(close_objects),
            ("items" | "additionalProperties" | "not" | "if" | "then" | "else" | "contains", v) => close_objects(v),
            _ => {}
        }
    }
}

/// JSON as Python's `json.dumps` writes it (", " and ": ", no other
/// whitespace): free whitespace would let a sampled model pad its answer
/// with blank lines until it runs out of tokens.
fn with_layout(mut schema: Value) -> Result<Value> {
    if !schema.is_object() {
        bail!("a JSON schema must be an object, got {schema}");
    }
    let options = JsonCompileOptions {
        item_separator: ", ".into(),
        key_separator: ": ".into(),
        whitespace_flexible: false,
        ..JsonCompileOptions::default()
    };
    options.apply_to(&mut schema);
    Ok(schema)
}

/// Compiled grammars kept per model; past this many the cache starts over.
const CACHED_GRAMMARS: usize = 256;

/// A model's grammar compiler: its vocabulary as llguidance's token trie
/// (built on first use), and the grammars compiled so far.
pub struct Grammars {
    factory: OnceLock<Result<ParserFactory, String>>,
    compiled: Mutex<HashMap<String, TokenParser>>,
    /// The model's end-of-generation tokens, allowed where the grammar may end.
    end_tokens: Vec<u32>,
    /// The end token llguidance knows (a stand-in past the vocabulary for
    /// a model without one).
    eos: u32,
}

impl Grammars {
    pub fn new(tok: &Tokenizer) -> Grammars {
        let end_tokens = tok.end_tokens().to_vec();
        let eos = end_tokens.first().copied().unwrap_or(tok.vocab_size() as u32);
        Grammars { factory: OnceLock::new(), compiled: Mutex::new(HashMap::new()), end_tokens, eos }
    }

    fn factory(&self, tok: &Tokenizer) -> Result<&ParserFactory> {
        self.factory
            .get_or_init(|| {
                // Control tokens are llguidance's special tokens (its marker
                // byte, then the name): never text a grammar's literals match.
                let marked = |t: u32| [&[TokTrie::SPECIAL_TOKEN_MARKER][..], tok.token_text(t).as_bytes()].concat();
                let mut words: Vec<Vec<u8>> =
                    (0..tok.vocab_size() as u32).map(|t| if tok.is_control(t) { marked(t) } else { tok.token_bytes(t).to_vec() }).collect();
                if self.eos as usize == words.len() {
                    words.push(b"\xffeos".to_vec());
                }
                let info = TokRxInfo::new(words.len() as u32, self.eos);
                let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| format!("{e:#}"))?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(|e| anyhow!("the grammar engine cannot take this model's vocabulary: {e}"))
    }

    /// A fresh matcher for `spec` over `tok`'s vocabulary (the one these
    /// grammars were made for), compiling it unless compiled before. The
    /// error says why the grammar does not compile.
    pub fn constraint(&self, tok: &Tokenizer, spec: &GrammarSpec) -> Result<Constraint> {
        let key = spec.key();
        let cached = self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let parser = match cached {
            Some(p) => p,
            None => {
                let parser =
                    self.factory(tok)?.create_parser(spec.top_level()?).map_err(|e| anyhow!("the grammar does not compile: {e}"))?;
                let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
                if compiled.len() >= CACHED_GRAMMARS {
                    compiled.clear();
                }
                compiled.insert(key, parser.clone());
                parser
            }
        };
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            bail!("the grammar does not compile: {e}");
        }
        Ok(Constraint { matcher, end_tokens: self.end_tokens.clone(), eos: self.eos, masked: Vec::new() })
    }
}

/// One sequence's place in its grammar.
pub struct Constraint {
    matcher: Matcher,
    end_tokens: Vec<u32>,
    eos: u32,
    /// The step's logits with what the grammar forbids at minus infinity.
    masked: Vec<f32>,
}

impl Clone for Constraint {
    /// Its own matcher state from here on (each of `n` choices).
    fn clone(&self) -> Constraint {
        Constraint { matcher: self.matcher.deep_clone(), end_tokens: self.end_tokens.clone(), eos: self.eos, masked: Vec::new() }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("stopped", &self.matcher.is_stopped()).finish()
    }
}

impl Constraint {
    /// `logits` with every token the grammar does not allow next at minus
    /// infinity; the end tokens stay only where the grammar may end.
    pub fn mask(&mut self, logits: &[f32]) -> Result<&[f32]> {
        let allowed = self.matcher.compute_mask().map_err(|e| anyhow!("the grammar failed: {e}"))?;
        self.masked.clear();
        self.masked.resize(logits.len(), f32::NEG_INFINITY);
        allowed.iter_set_entries(|t| {
            if let Some(m) = self.masked.get_mut(t) {
                *m = logits[t];
            }
        });
        let may_end = allowed.is_allowed(self.eos);
        if let Some(m) = self.masked.get_mut(self.eos as usize) {
            *m = f32::NEG_INFINITY;
        }
        for &t in &self.end_tokens {
            self.masked[t as usize] = if may_end { logits[t as usize] } else { f32::NEG_INFINITY };
        }
        Ok(&self.masked)
    }

    /// Takes the token drawn. True when the grammar is complete and allows
    /// nothing more: the sequence ends there.
    pub fn accept(&mut self, token: u32) -> Result<bool> {
        if self.end_tokens.contains(&token) {
            return Ok(true);
        }
        self.matcher.consume_token(token).map_err(|e| anyhow!("the grammar failed: {e}"))?;
        Ok(self.matcher.is_stopped())
    }
}
