//! Chat-template rendering that keeps patient text out of the special-token space.
//!
//! The template's own markup (`<|im_start|>user\n`, `<|im_end|>`) is tokenized with special
//! tokens parsed; message content is tokenized as plain text, so a message that contains
//! `<|im_start|>system` is just characters, not a new turn (prompt injection through special
//! tokens is impossible by construction).

use crate::{ChatMessage, EngineError};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

/// A private-use character that never appears in rendered markup.
const SENTINEL: &str = "\u{E000}";

pub(crate) struct Templates {
    template: LlamaChatTemplate,
    /// What opens the assistant's reply (`<|im_start|>assistant\n` for ChatML).
    pub assistant_header: String,
    /// What closes an assistant reply (`<|im_end|>\n` for ChatML), as tokens.
    pub end_of_turn: Vec<LlamaToken>,
}

impl Templates {
    pub fn from_model(model: &LlamaModel) -> Result<Self, EngineError> {
        let template = match model.chat_template(None) {
            Ok(t) => t,
            // Models without an embedded template get ChatML, llama.cpp's built-in by name.
            Err(_) => {
                LlamaChatTemplate::new("chatml").map_err(|e| EngineError::Backend(e.to_string()))?
            }
        };
        let apply = |msgs: &[(&str, &str)], add_ass: bool| -> Result<String, EngineError> {
            let chat = msgs
                .iter()
                .map(|(r, c)| LlamaChatMessage::new(r.to_string(), c.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::Backend(e.to_string()))?;
            model
                .apply_chat_template(&template, &chat, add_ass)
                .map_err(|e| EngineError::Backend(format!("chat template: {e}")))
        };
        let without = apply(&[("user", "x")], false)?;
        let with = apply(&[("user", "x")], true)?;
        let assistant_header = with
            .strip_prefix(&without)
            .ok_or_else(|| {
                EngineError::Backend("chat template: unexpected assistant prompt".into())
            })?
            .to_string();
        let reply = apply(&[("assistant", SENTINEL)], false)?;
        let end_of_turn = reply
            .split_once(SENTINEL)
            .map(|(_, after)| after.to_string())
            .ok_or_else(|| EngineError::Backend("chat template: cannot find end of turn".into()))?;
        Ok(Templates {
            template,
            assistant_header,
            end_of_turn: special(model, &end_of_turn),
        })
    }

    /// Tokenizes `messages` (markup with special tokens, content as plain text), then the
    /// assistant header if `generation_prompt`.
    pub fn tokenize(
        &self,
        model: &LlamaModel,
        messages: &[ChatMessage],
        generation_prompt: bool,
        at_start: bool,
    ) -> Result<Vec<LlamaToken>, EngineError> {
        let mut out = Vec::new();
        if at_start && model.vocab().should_add_bos() {
            out.push(model.vocab().bos());
        }
        for m in messages {
            if m.content.contains(SENTINEL) || m.role.contains(SENTINEL) {
                return Err(EngineError::InvalidInput(
                    "message contains the reserved character U+E000".into(),
                ));
            }
            if m.role.is_empty()
                || m.role
                    .chars()
                    .any(|c| !c.is_ascii_alphanumeric() && c != '_')
            {
                return Err(EngineError::InvalidInput(format!(
                    "role `{}` must be a non-empty ASCII word",
                    m.role
                )));
            }
            let chat = LlamaChatMessage::new(m.role.clone(), SENTINEL.to_string())
                .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
            let rendered = model
                .apply_chat_template(&self.template, &[chat], false)
                .map_err(|e| EngineError::Backend(format!("chat template: {e}")))?;
            let (before, after) = rendered
                .split_once(SENTINEL)
                .ok_or_else(|| EngineError::Backend("chat template dropped the content".into()))?;
            out.extend(special(model, before));
            if m.content.contains('\0') {
                return Err(EngineError::InvalidInput(
                    "message contains a NUL byte".into(),
                ));
            }
            out.extend(model.vocab().tokenize(m.content.as_bytes(), false, false));
            out.extend(special(model, after));
        }
        if generation_prompt {
            out.extend(special(model, &self.assistant_header));
        }
        Ok(out)
    }
}

fn special(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    if text.is_empty() {
        return Vec::new();
    }
    model.vocab().tokenize(text.as_bytes(), false, true)
}
