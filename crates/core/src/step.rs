use serde::{Deserialize, Serialize};
use std::fmt;

/// The steps of the triage workflow, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Plan,
    Retrieve,
    Analyze,
    Validate,
    Respond,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Plan,
        Step::Retrieve,
        Step::Analyze,
        Step::Validate,
        Step::Respond,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Retrieve => "retrieve",
            Step::Analyze => "analyze",
            Step::Validate => "validate",
            Step::Respond => "respond",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
