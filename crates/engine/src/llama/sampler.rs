//! Greedy sampling under an optional constraint, with the log-probability of each pick.
//!
//! careflow samples greedily: a triage step should give the same answer to the same transcript.
//! The log-probability is computed over the tokens the constraint allows (renormalised), which
//! is what a confidence estimate of a constrained choice (a disposition label) needs.

use crate::{Constraint, EngineError};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) enum Active {
    Free,
    Json(Box<Matcher>),
    Gbnf(LlamaSampler),
}

pub(crate) struct Pick {
    pub token: LlamaToken,
    pub logprob: f32,
}

/// Compiles constraints; keeps the llguidance token environment (built once per model, it
/// walks the whole vocabulary) and a cache of compiled JSON-schema matchers.
#[derive(Default)]
pub(crate) struct ConstraintCompiler {
    factory: Option<Arc<ParserFactory>>,
    compiled: HashMap<String, Matcher>,
}

impl ConstraintCompiler {
    pub fn compile(
        &mut self,
        model: &LlamaModel,
        constraint: Option<&Constraint>,
    ) -> Result<Active, EngineError> {
        match constraint {
            None => Ok(Active::Free),
            Some(Constraint::Gbnf(grammar)) => LlamaSampler::grammar(model, grammar, "root")
                .map(Active::Gbnf)
                .map_err(|e| EngineError::Constraint(format!("GBNF grammar: {e}"))),
            Some(Constraint::JsonSchema(schema)) => {
                let mut schema = schema.clone();
                let Some(obj) = schema.as_object_mut() else {
                    return Err(EngineError::Constraint(
                        "JSON schema must be an object".into(),
                    ));
                };
                // Compact JSON: flexible whitespace lets a small model wander into blank lines.
                obj.entry("x-guidance")
                    .or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
                let key = schema.to_string();
                if let Some(m) = self.compiled.get(&key) {
                    return Ok(Active::Json(Box::new(m.deep_clone())));
                }
                let factory = match &self.factory {
                    Some(f) => f.clone(),
                    None => {
                        let env = LlamaSampler::llguidance_tok_env(model);
                        let f = Arc::new(
                            ParserFactory::new_simple(&env)
                                .map_err(|e| EngineError::Constraint(e.to_string()))?,
                        );
                        self.factory = Some(f.clone());
                        f
                    }
                };
                let parser = factory
                    .create_parser(TopLevelGrammar::from_json_schema(schema))
                    .map_err(|e| EngineError::Constraint(format!("JSON schema: {e}")))?;
                let matcher = Matcher::new(Ok(parser));
                if let Some(err) = matcher.get_error() {
                    return Err(EngineError::Constraint(format!("JSON schema: {err}")));
                }
                self.compiled.insert(key, matcher.deep_clone());
                Ok(Active::Json(Box::new(matcher)))
            }
        }
    }
}

impl Active {
    /// Whether the constraint has reached its end (nothing more may follow).
    pub fn finished(&self) -> bool {
        match self {
            Active::Json(m) => m.is_stopped(),
            _ => false,
        }
    }

    /// Picks the most likely allowed token.
    pub fn pick(&mut self, logits: &[f32]) -> Result<Pick, EngineError> {
        match self {
            Active::Free => Ok(best(logits, |_| true)),
            Active::Json(m) => {
                let mask = m
                    .compute_mask_or_eos()
                    .map_err(|e| EngineError::Constraint(e.to_string()))?;
                let p = best(logits, |i| mask.is_allowed(i as u32));
                if !p.logprob.is_finite() {
                    return Err(EngineError::Constraint("no token is allowed".into()));
                }
                Ok(p)
            }
            Active::Gbnf(s) => {
                let mut arr = LlamaTokenDataArray::from_iter(
                    logits
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
                    false,
                );
                arr.apply_sampler(s);
                let allowed: Vec<bool> = {
                    let mut v = vec![false; logits.len()];
                    for d in &arr.data {
                        if d.logit().is_finite() {
                            if let Some(slot) = v.get_mut(d.id().0 as usize) {
                                *slot = true;
                            }
                        }
                    }
                    v
                };
                let p = best(logits, |i| allowed[i]);
                if !p.logprob.is_finite() {
                    return Err(EngineError::Constraint("no token is allowed".into()));
                }
                Ok(p)
            }
        }
    }

    /// Advances the constraint past `token`.
    pub fn accept(&mut self, token: LlamaToken) -> Result<(), EngineError> {
        match self {
            Active::Free => Ok(()),
            Active::Json(m) => m
                .consume_token(token.0 as u32)
                .map_err(|e| EngineError::Constraint(e.to_string())),
            Active::Gbnf(s) => {
                s.accept(token);
                Ok(())
            }
        }
    }
}

fn best(logits: &[f32], allowed: impl Fn(usize) -> bool) -> Pick {
    let mut best_i = 0usize;
    let mut best_l = f32::NEG_INFINITY;
    let mut max = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if allowed(i) && l > best_l {
            best_l = l;
            best_i = i;
        }
        if allowed(i) && l > max {
            max = l;
        }
    }
    let sum: f64 = logits
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed(*i))
        .map(|(_, &l)| ((l - max) as f64).exp())
        .sum();
    let logprob = if best_l.is_finite() {
        (best_l - max) - sum.ln() as f32
    } else {
        f32::NEG_INFINITY
    };
    Pick {
        token: LlamaToken(best_i as i32),
        logprob,
    }
}
