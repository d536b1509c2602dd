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
use crate::db::{Records, Tx};
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
    /// `progress(done, total)` counts persons. Returns the number of persons created.
    ///
    /// Atomic: persons are generated and written in chunks of 500 (each chunk's rows in
    /// multi-row statements), but every chunk goes into ONE transaction for the whole run,
    /// committed at the end. So no chunk, and no person, is ever half-written: on any
    /// failure the run returns [`RecordsError::RolledBack`] and the database is as it was
    /// (the cost: a run's rows sit in the SQLite write-ahead log, or PostgreSQL's
    /// uncommitted tuples, until that commit).
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
        let mut conn = self.acquire().await?;
        let mut tx = conn.begin().await?;
        let written = write(&mut tx, persons, seed, as_of, progress).await;
        let outcome = match written {
            Err((what, e)) => {
                tx.rollback().await;
                Err(RecordsError::RolledBack {
                    what,
                    source: Box::new(e),
                })
            }
            Ok(()) => tx.commit().await.map_err(|e| {
                e.into_records_error(format!("committing {persons} synthetic persons"))
            }),
        };
        if outcome.is_err() {
            conn.discard();
        }
        outcome?;
        Ok(persons)
    }
}

/// Writes the run into `tx`; on failure, what it was doing and the error.
async fn write(
    tx: &mut Tx<'_>,
    persons: u64,
    seed: u64,
    as_of: NaiveDate,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<(), (String, RecordsError)> {
    let setup = |e| (format!("preparing {persons} synthetic persons"), e);
    tx.insert(&table::CONCEPT, &catalog::concept_rows(), OnConflict::Keep)
        .await
        .map_err(setup)?;
    let mut ids = Ids {
        person: first_id(tx, &table::PERSON, SYNTH_PERSON_ID_BASE)
            .await
            .map_err(setup)?,
        visit: first_id(tx, &table::VISIT, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
        condition: first_id(tx, &table::CONDITION, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
        drug: first_id(tx, &table::DRUG, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
        procedure: first_id(tx, &table::PROCEDURE, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
        measurement: first_id(tx, &table::MEASUREMENT, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
        observation: first_id(tx, &table::OBSERVATION, SYNTH_EVENT_ID_BASE)
            .await
            .map_err(setup)?,
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
            tx.insert(spec, rows, OnConflict::Fail).await.map_err(|e| {
                (
                    format!(
                        "writing synthetic persons {}-{end} of {persons} (`{}`)",
                        done + 1,
                        spec.name
                    ),
                    e,
                )
            })?;
        }
        done = end;
        progress(done, persons);
    }
    Ok(())
}

/// The first id to use in a table: above its largest key and above `base`.
async fn first_id(tx: &mut Tx<'_>, spec: &TableSpec, base: i64) -> Result<i64, RecordsError> {
    Ok(Records::max_id(tx, spec).await?.max(base) + 1)
}
