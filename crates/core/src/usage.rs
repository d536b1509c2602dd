use serde::{Deserialize, Serialize};
use std::ops::AddAssign;

/// Token counters for one engine call, one step or one request.
///
/// - `submitted`: tokens the caller handed to the engine (the transcript it asked to be in context);
/// - `computed`: tokens the engine actually prefilled (ran through the model) for it;
/// - `reused`: tokens served from a cache (a forked shared prefix) instead of computed;
/// - `generated`: tokens sampled.
///
/// For a stateful session `submitted == computed + reused`; a stateless agent re-submits its whole
/// transcript each step, so its `computed` grows with every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub submitted: u64,
    pub computed: u64,
    pub reused: u64,
    pub generated: u64,
    /// Wall time spent in the engine for this work, in microseconds.
    pub micros: u64,
}

impl AddAssign for TokenUsage {
    fn add_assign(&mut self, o: TokenUsage) {
        self.submitted += o.submitted;
        self.computed += o.computed;
        self.reused += o.reused;
        self.generated += o.generated;
        self.micros += o.micros;
    }
}

impl std::iter::Sum for TokenUsage {
    fn sum<I: Iterator<Item = TokenUsage>>(iter: I) -> Self {
        let mut total = TokenUsage::default();
        for u in iter {
            total += u;
        }
        total
    }
}

impl TokenUsage {
    pub fn millis(&self) -> f64 {
        self.micros as f64 / 1000.0
    }
}
