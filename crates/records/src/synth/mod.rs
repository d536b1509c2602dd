//! `Records::synth`: deterministic synthetic persons.
//!
//! - [`rng`]: the seeded generator (one independent stream per person);
//! - [`catalog`]: the concepts used (standard OHDSI ids, or the site-specific range);
//! - [`person`]: one person (demographics, chronic conditions), with [`treatments`],
//!   [`encounters`] (visits, vital signs, other events) and [`rows`] (row layouts).
//!
//! Person `k` of a run depends only on `(seed, k, as_of)`, never on the ids already in
//! the database, so the same seed gives the same records.

mod catalog;
mod encounters;
mod person;
mod rng;
mod rows;
mod treatments;

use chrono::NaiveDate;

use crate::dates::parse_today;
use crate::db::Records;
use crate::error::RecordsError;
use crate::table::{self, OnConflict, TableSpec};
use person::{Batch, Ids};
use rng::Rng;

/// The day synthetic records are dated up to (`synth` uses it; pass it as `today` to
/// [`Records::patient_facts`] to see the flags as generated: pregnancies, recent surgery).
pub const SYNTH_AS_OF: &str = "2026-12-01";

/// Synthetic person ids start above this (and above any existing id), so a later load of
/// a real sample (ids 1, 2, …) cannot overwrite them and mix two people's records.
pub const SYNTH_PERSON_ID_BASE: i64 = 1_000_000;
/// Synthetic event ids (visits, conditions, …) start above this and any existing id.
pub const SYNTH_EVENT_ID_BASE: i64 = 1_000_000_000;

/// Persons generated and written per round.
const CHUNK: u64 = 500;

impl Records {
    /// `persons` synthetic persons dated up to [`SYNTH_AS_OF`]; same seed → same data.
    /// Person ids start above any existing id (and above [`SYNTH_PERSON_ID_BASE`]).
    /// Everything is written in one transaction; `progress(done, total)` counts persons.
    /// Returns the number of persons created.
    pub async fn synth(
        &self,
        persons: u64,
        seed: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, RecordsError> {
        self.synth_as_of(persons, seed, SYNTH_AS_OF, progress).await
    }

    /// [`Records::synth`] with records dated up to `as_of` (`YYYY-MM-DD`) instead.
    pub async fn synth_as_of(
        &self,
        persons: u64,
        seed: u64,
        as_of: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, RecordsError> {
        let as_of: NaiveDate = parse_today(as_of)?;
        let mut tx = self.begin().await?;
        tx.insert(&table::CONCEPT, &catalog::concept_rows(), OnConflict::Keep)
            .await?;
        let start = |max: i64, base: i64| max.max(base) + 1;
        let mut ids = Ids {
            person: start(
                Records::max_id(&mut tx, &table::PERSON).await?,
                SYNTH_PERSON_ID_BASE,
            ),
            visit: start(
                Records::max_id(&mut tx, &table::VISIT).await?,
                SYNTH_EVENT_ID_BASE,
            ),
            condition: start(
                Records::max_id(&mut tx, &table::CONDITION).await?,
                SYNTH_EVENT_ID_BASE,
            ),
            drug: start(
                Records::max_id(&mut tx, &table::DRUG).await?,
                SYNTH_EVENT_ID_BASE,
            ),
            procedure: start(
                Records::max_id(&mut tx, &table::PROCEDURE).await?,
                SYNTH_EVENT_ID_BASE,
            ),
            measurement: start(
                Records::max_id(&mut tx, &table::MEASUREMENT).await?,
                SYNTH_EVENT_ID_BASE,
            ),
            observation: start(
                Records::max_id(&mut tx, &table::OBSERVATION).await?,
                SYNTH_EVENT_ID_BASE,
            ),
        };
        progress(0, persons);
        let mut done = 0u64;
        while done < persons {
            let end = (done + CHUNK).min(persons);
            let mut batch = Batch::default();
            for k in done..end {
                person::generate(Rng::for_item(seed, k), as_of, &mut ids, &mut batch);
            }
            let tables: [(&TableSpec, &Vec<_>); 7] = [
                (&table::PERSON, &batch.person),
                (&table::VISIT, &batch.visit),
                (&table::CONDITION, &batch.condition),
                (&table::DRUG, &batch.drug),
                (&table::PROCEDURE, &batch.procedure),
                (&table::MEASUREMENT, &batch.measurement),
                (&table::OBSERVATION, &batch.observation),
            ];
            for (spec, rows) in tables {
                tx.insert(spec, rows, OnConflict::Fail).await?;
            }
            done = end;
            progress(done, persons);
        }
        tx.commit().await?;
        Ok(persons)
    }
}
