//! Faults the server tests inject to prove a failure stays with its
//! request: built only with the `test-hooks` feature, and then armed only
//! by CARAVAN_TEST_FAULTS=1. A default build has none of it; its checks
//! are constant `false`.

/// A sequence with this seed panics while sampling.
#[cfg(feature = "test-hooks")]
const FAULT_SEED: u64 = 0xFA17;

#[cfg(feature = "test-hooks")]
fn armed() -> bool {
    static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ARMED.get_or_init(|| std::env::var_os("CARAVAN_TEST_FAULTS").is_some_and(|v| v == "1"))
}

/// Whether a sequence seeded with `seed` is to fail in its draw.
#[inline(always)]
pub fn sequence_fails(seed: u64) -> bool {
    #[cfg(feature = "test-hooks")]
    return armed() && seed == FAULT_SEED;
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = seed;
        false
    }
}

/// Whether a request body asks its handler to panic
/// (`"caravan_test_panic"`).
#[inline(always)]
pub fn handler_panics(body: &serde_json::Value) -> bool {
    #[cfg(feature = "test-hooks")]
    return armed() && body.get("caravan_test_panic").is_some();
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = body;
        false
    }
}

/// Seconds a batch job has before it expires: OpenAI's 24 hours, or
/// CARAVAN_TEST_BATCH_WINDOW's when armed, so that a test can see a job
/// expire.
pub fn batch_window_seconds() -> u64 {
    #[cfg(feature = "test-hooks")]
    if armed() {
        if let Some(s) = std::env::var("CARAVAN_TEST_BATCH_WINDOW").ok().and_then(|s| s.parse().ok()) {
            return s;
        }
    }
    crate::jobs::WINDOW_SECONDS
}
