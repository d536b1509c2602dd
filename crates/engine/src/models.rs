//! Placeholder replaced below.
pub fn default_model_path() -> std::path::PathBuf {
    dirs_cache().join("careflow/models/smollm2-135m-instruct-q4_1.gguf")
}
fn dirs_cache() -> std::path::PathBuf {
    std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default().join(".cache")
}
