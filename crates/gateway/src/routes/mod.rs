//! The HTTP handlers, one file per family of routes. Each one authenticates through
//! [`crate::state::AppState`], validates through [`crate::validate`], and returns
//! [`crate::api_error::ApiError`] on failure; the console's pages ([`console`]) answer with
//! pages instead.

pub mod console;
pub mod keys;
pub mod openai;
pub mod ops;
pub mod portal_view;
pub mod review;
pub mod triage;
