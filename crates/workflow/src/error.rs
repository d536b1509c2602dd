use careflow_core::MessageError;
use careflow_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error(transparent)]
    Input(#[from] MessageError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("records: {0}")]
    Records(#[from] careflow_records::RecordsError),
    #[error("knowledge: {0}")]
    Knowledge(#[from] careflow_knowledge::KnowledgeError),
    #[error("patient {0} is not in the records database")]
    UnknownPatient(i64),
    #[error("workflow file {file}{}: field `{field}`: {reason}", step.as_ref().map(|s| format!(", step `{s}`")).unwrap_or_default())]
    Definition {
        file: String,
        step: Option<String>,
        field: String,
        reason: String,
    },
    #[error("invalid workflow configuration: {0}")]
    Config(String),
    #[error("step {step}: {reason}")]
    Step { step: &'static str, reason: String },
}
