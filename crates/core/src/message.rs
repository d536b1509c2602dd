//! Validated input. Text from a portal, a command line or a file becomes a [`PatientMessage`]
//! here or is refused with an error that names the cause.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest message accepted, in characters. Portal messages are short; anything longer is
/// either an attachment pasted by mistake or an attempt to flood the context window.
pub const MAX_MESSAGE_CHARS: usize = 4000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message: must not be empty")]
    Empty,
    #[error("message: {chars} characters is over the limit of {max}")]
    TooLong { chars: usize, max: usize },
    #[error("message: is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("message: contains a control character (U+{code:04X}) at character {position}")]
    ControlCharacter { code: u32, position: usize },
    #[error("patient_id: `{0}` is not a positive integer")]
    InvalidPatientId(String),
}

/// A patient's portal message that passed validation: non-empty, at most
/// [`MAX_MESSAGE_CHARS`] characters, UTF-8, and free of control characters other than
/// newline and tab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientMessage(String);

impl PatientMessage {
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(MessageError::Empty);
        }
        let chars = trimmed.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(MessageError::TooLong {
                chars,
                max: MAX_MESSAGE_CHARS,
            });
        }
        if let Some((position, c)) = trimmed
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && *c != '\n' && *c != '\t' && *c != '\r')
        {
            return Err(MessageError::ControlCharacter {
                code: c as u32,
                position,
            });
        }
        Ok(PatientMessage(trimmed.replace("\r\n", "\n")))
    }

    /// Validates raw bytes (from a file, a socket or an OS argument).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        let text = std::str::from_utf8(bytes).map_err(|e| MessageError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PatientMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OMOP `person_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientId(pub i64);

impl std::str::FromStr for PatientId {
    type Err = MessageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<i64>() {
            Ok(v) if v > 0 => Ok(PatientId(v)),
            _ => Err(MessageError::InvalidPatientId(s.to_string())),
        }
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_messages_with_the_cause() {
        assert_eq!(PatientMessage::parse("  \n "), Err(MessageError::Empty));
        let huge = "a".repeat(MAX_MESSAGE_CHARS + 1);
        assert!(matches!(
            PatientMessage::parse(&huge),
            Err(MessageError::TooLong { .. })
        ));
        assert_eq!(
            PatientMessage::parse("pain\u{0007}"),
            Err(MessageError::ControlCharacter {
                code: 7,
                position: 4
            })
        );
        assert_eq!(
            PatientMessage::from_bytes(b"ok \xff\xfe"),
            Err(MessageError::InvalidUtf8 { offset: 3 })
        );
        assert!(PatientMessage::parse("I have a headache.\nSince Monday.").is_ok());
    }

    #[test]
    fn patient_ids_are_positive_integers() {
        assert_eq!("42".parse::<PatientId>(), Ok(PatientId(42)));
        assert!("0".parse::<PatientId>().is_err());
        assert!("abc".parse::<PatientId>().is_err());
    }
}
