//! careflow-records: the patient records careflow reads, as an OMOP CDM v5.4 subset on
//! SQLite or PostgreSQL (sqlx, runtime-bound queries only).
//!
//! Module layout:
//! - [`error`]: [`RecordsError`], the crate's one error type;
//! - `db`: [`Records`] (connect, init via the SQL migrations in `migrations/sqlite` and
//!   `migrations/postgres`, `patients`, `counts`) and the batched transactional writes;
//! - `table`: the eight tables, their columns and the shared INSERT … ON CONFLICT text;
//! - `csvread` + `load`: [`Records::load_omop_zip`] (sha256, validate, then load every
//!   table in one transaction: all or nothing);
//! - `synth`: [`Records::synth`] (deterministic synthetic persons: `rng`, `catalog`,
//!   `person`, `treatments`, `encounters`, `rows`);
//! - `facts` + `flags`: [`Records::patient_facts`] and the keyword lists behind its flags;
//! - `dates`: date parsing and ages;
//! - `schema_card`: [`schema_card`], the tables as the SQL-writing step sees them;
//! - `guard` (`allow`, `check`, `rewrite`): [`guard_sql`], the parse + allow-list + LIMIT +
//!   patient-scope rewrite of model-written SQL;
//! - `scope`: [`Records::query_scoped`], running guarded SQL for one patient (SQLite:
//!   scope CTEs on a `query_only` connection with a progress-handler deadline; PostgreSQL:
//!   row-level security as `careflow_reader` in a read-only transaction).

mod csvread;
mod dates;
mod db;
pub mod error;
mod facts;
mod flags;
mod guard;
mod load;
mod schema_card;
mod scope;
mod synth;
mod table;

pub use db::Records;
pub use error::RecordsError;
pub use guard::{guard_sql, Backend, GuardPolicy};
pub use load::LoadReport;
pub use schema_card::schema_card;
pub use scope::QueryResult;
pub use synth::{SYNTH_AS_OF, SYNTH_EVENT_ID_BASE, SYNTH_PERSON_ID_BASE};

/// sha256 of `shared/data/omop/Synthea27Nj_5.4.zip` (OHDSI EunomiaDatasets, 28 persons).
pub const SYNTHEA_ZIP_SHA256: &str =
    "cdd3971be325e17b0e872bf4560711ab4c346917ecb079e2faf32badb55cb693";
