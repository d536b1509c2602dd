//! The row layouts of the event tables, in each table's column order.

use chrono::{Duration, NaiveDate};

use super::catalog::{self as c, Concept};
use super::person::{next, Gen};
use crate::table::Value;

impl Gen<'_> {
    pub(super) fn condition(
        &mut self,
        concept: Concept,
        start: NaiveDate,
        end: Option<NaiveDate>,
        visit: Option<i64>,
    ) {
        let id = next(&mut self.ids.condition);
        self.out.condition.push(vec![
            Value::int(id),
            Value::int(self.person),
            Value::int(concept.id),
            Value::date(start),
            Value::Date(end),
            Value::int(c::EHR.id),
            Value::Int(visit),
            Value::text(concept.code),
        ]);
    }

    pub(super) fn drug(
        &mut self,
        concept: Concept,
        start: NaiveDate,
        days: i64,
        visit: Option<i64>,
    ) {
        let id = next(&mut self.ids.drug);
        self.out.drug.push(vec![
            Value::int(id),
            Value::int(self.person),
            Value::int(concept.id),
            Value::date(start),
            Value::date(start + Duration::days(days - 1)),
            Value::int(c::EHR.id),
            Value::Float(Some(days as f64)),
            Value::int(days),
            Value::Text(None),
            Value::Int(None),
            Value::Int(visit),
            Value::text(concept.code),
        ]);
    }

    /// 90-day fills from `start` (or a year ago, whichever is later) to today.
    pub(super) fn fills(&mut self, concept: Concept, start: NaiveDate) {
        let mut day = start.max(self.as_of - Duration::days(365));
        while day <= self.as_of {
            self.drug(concept, day, 90, None);
            day += Duration::days(90);
        }
    }

    pub(super) fn procedure(&mut self, concept: Concept, date: NaiveDate, visit: Option<i64>) {
        let id = next(&mut self.ids.procedure);
        self.out.procedure.push(vec![
            Value::int(id),
            Value::int(self.person),
            Value::int(concept.id),
            Value::date(date),
            Value::Date(None),
            Value::int(c::EHR.id),
            Value::Int(visit),
            Value::text(concept.code),
        ]);
    }

    pub(super) fn measurement(
        &mut self,
        concept: Concept,
        date: NaiveDate,
        value: f64,
        unit: Concept,
        visit: i64,
    ) {
        let id = next(&mut self.ids.measurement);
        self.out.measurement.push(vec![
            Value::int(id),
            Value::int(self.person),
            Value::int(concept.id),
            Value::date(date),
            Value::int(c::EHR.id),
            Value::Float(Some(value)),
            Value::Int(None),
            Value::int(unit.id),
            Value::Float(None),
            Value::Float(None),
            Value::int(visit),
            Value::text(concept.code),
            Value::text(unit.code),
            Value::Text(None),
        ]);
    }

    pub(super) fn observation(
        &mut self,
        concept: Concept,
        date: NaiveDate,
        value: &str,
        visit: Option<i64>,
    ) {
        let id = next(&mut self.ids.observation);
        self.out.observation.push(vec![
            Value::int(id),
            Value::int(self.person),
            Value::int(concept.id),
            Value::date(date),
            Value::int(c::EHR.id),
            Value::Float(None),
            Value::text(value),
            Value::Int(None),
            Value::Int(None),
            Value::Int(visit),
            Value::text(concept.code),
        ]);
    }
}
