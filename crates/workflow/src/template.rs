//! Prompt templates: literal text with `{{name}}` placeholders, parsed once when the workflow
//! file is loaded (so an unknown or unclosed placeholder is a load error, not a request error).

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values a template is rendered with: request values by name, and the JSON outputs of
/// earlier steps by step name.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    pub values: HashMap<&'static str, String>,
    pub outputs: HashMap<String, Value>,
}

impl Vars {
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.insert(name, value.into());
    }

    fn get(&self, name: &str) -> String {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let Some((step, field)) = name.split_once('.') else {
            return String::new();
        };
        match self.outputs.get(step).map(|o| &o[field]) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
        }
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` near \"{}\"", snippet(after)))?;
            let name = after[..close].trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(format!("bad placeholder `{{{{{}}}}}`", &after[..close]));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn render(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&vars.get(v)),
            }
        }
        out
    }
}

fn snippet(s: &str) -> String {
    s.chars().take(30).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_values_and_step_fields() {
        let t =
            Template::parse("Hi {{message}}; plan said {{plan.complaint}} ({{plan.n}}).").unwrap();
        let mut v = Vars::default();
        v.set("message", "back pain");
        v.outputs.insert(
            "plan".into(),
            serde_json::json!({"complaint": "back", "n": 3}),
        );
        assert_eq!(t.render(&v), "Hi back pain; plan said back (3).");
        assert_eq!(
            t.variables().collect::<Vec<_>>(),
            ["message", "plan.complaint", "plan.n"]
        );
    }

    #[test]
    fn an_unclosed_or_odd_placeholder_is_refused() {
        assert!(Template::parse("x {{message")
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("x {{mes sage}}")
            .unwrap_err()
            .contains("bad placeholder"));
    }
}
