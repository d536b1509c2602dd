//! One synthetic person: demographics and chronic conditions here; their treatments in
//! `treatments`, visits and other events in `encounters`, row layouts in `rows`.
//! Prevalences are rounded figures for a US primary-care panel, tilted a little towards
//! the risk factors triage rules look at (anticoagulants, pregnancy, immunosuppression).

use chrono::{Datelike, Duration, NaiveDate};

use super::catalog::{self as c, Concept};
use super::rng::Rng;
use crate::table::{Row, Value};

/// The cancers a person may have (at most one).
const CANCERS: [Concept; 4] = [
    c::BREAST_CANCER,
    c::COLON_CANCER,
    c::PROSTATE_CANCER,
    c::LUNG_CANCER,
];

/// Next free id per table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ids {
    pub person: i64,
    pub visit: i64,
    pub condition: i64,
    pub drug: i64,
    pub procedure: i64,
    pub measurement: i64,
    pub observation: i64,
}

/// Rows per table, in each table's column order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub person: Vec<Row>,
    pub visit: Vec<Row>,
    pub condition: Vec<Row>,
    pub drug: Vec<Row>,
    pub procedure: Vec<Row>,
    pub measurement: Vec<Row>,
    pub observation: Vec<Row>,
}

pub(super) fn next(id: &mut i64) -> i64 {
    let v = *id;
    *id += 1;
    v
}

pub(super) struct Gen<'a> {
    pub(super) rng: Rng,
    pub(super) as_of: NaiveDate,
    pub(super) birth: NaiveDate,
    pub(super) person: i64,
    pub(super) ids: &'a mut Ids,
    pub(super) out: &'a mut Batch,
}

/// A visit: its id, date and whether the patient was febrile.
pub(super) struct Visit {
    pub(super) id: i64,
    pub(super) date: NaiveDate,
    pub(super) febrile: bool,
}

/// Generates person number `index` of a run into `out`, taking ids from `ids`.
pub(crate) fn generate(rng: Rng, as_of: NaiveDate, ids: &mut Ids, out: &mut Batch) {
    let mut rng = rng;
    let female = rng.chance(0.51);
    let age_days = age_in_days(&mut rng);
    let birth = as_of - Duration::days(age_days);
    let person = next(&mut ids.person);
    let race = *rng.pick(&[c::WHITE, c::WHITE, c::WHITE, c::WHITE, c::BLACK, c::ASIAN]);
    let ethnicity = if rng.chance(0.18) {
        c::HISPANIC
    } else {
        c::NOT_HISPANIC
    };
    out.person.push(vec![
        Value::int(person),
        Value::int(if female { c::FEMALE.id } else { c::MALE.id }),
        Value::int(i64::from(birth.year())),
        Value::int(i64::from(birth.month())),
        Value::int(i64::from(birth.day())),
        Value::int(race.id),
        Value::int(ethnicity.id),
        Value::text(&format!("careflow-synth-{person}")),
        Value::text(if female { "F" } else { "M" }),
    ]);
    let mut g = Gen {
        rng,
        as_of,
        birth,
        person,
        ids,
        out,
    };
    g.record(female, age_days / 365);
}

/// Ages: 2% under two (some under three months), 20% children, the rest adults to 95.
fn age_in_days(rng: &mut Rng) -> i64 {
    let r = rng.unit();
    let years = if r < 0.02 {
        return rng.between(5, 729);
    } else if r < 0.22 {
        rng.between(2, 17)
    } else if r < 0.50 {
        rng.between(18, 39)
    } else if r < 0.82 {
        rng.between(40, 64)
    } else {
        rng.between(65, 95)
    };
    years * 365 + rng.between(0, 364)
}

impl Gen<'_> {
    pub(super) fn days_ago(&self, days: i64) -> NaiveDate {
        (self.as_of - Duration::days(days)).max(self.birth)
    }

    /// A day between `lo` and `hi` days ago (not before birth).
    pub(super) fn recent(&mut self, lo: i64, hi: i64) -> NaiveDate {
        let back = self.rng.between(lo, hi);
        self.days_ago(back)
    }

    /// A chronic onset between `min_age` years of age (or 15 years ago) and a month ago.
    fn onset(&mut self, min_age: i64) -> NaiveDate {
        let earliest =
            (self.birth + Duration::days(min_age * 365)).max(self.as_of - Duration::days(15 * 365));
        let latest = self.as_of - Duration::days(30);
        if earliest >= latest {
            return latest.max(self.birth);
        }
        earliest + Duration::days(self.rng.between(0, (latest - earliest).num_days()))
    }

    fn record(&mut self, female: bool, age: i64) {
        let adult = age >= 18;
        let chronic = self.chronic_conditions(female, age);
        let visits = self.visits(age, chronic.0.len());
        for (concept, start) in &chronic.0 {
            self.condition(*concept, *start, None, None);
        }
        self.treat(&chronic, adult);
        if let Some(concept) = CANCERS.into_iter().find(|k| chronic.has(*k)) {
            self.cancer_care(concept, chronic.since(concept).unwrap_or(self.as_of));
        }
        if adult && self.rng.chance(0.012) {
            self.deep_vein_thrombosis();
        }
        if female && (18..=44).contains(&age) && self.rng.chance(0.12) {
            let start = self.recent(14, 270);
            self.condition(c::PREGNANCY, start, None, None);
        }
        if female && (22..=50).contains(&age) && self.rng.chance(0.25) {
            self.past_pregnancy(age);
        }
        if adult {
            self.surgery(age);
        }
        let diabetes = chronic.has(c::DIABETES_T2);
        self.visit_findings(
            &visits,
            chronic.has(c::HYPERTENSION),
            diabetes || chronic.has(c::PREDIABETES),
            diabetes,
            chronic.has(c::AFIB),
        );
        if adult {
            if let Some(last) = visits.last() {
                let status = *self.rng.pick(&[
                    "Never smoked tobacco",
                    "Never smoked tobacco",
                    "Never smoked tobacco",
                    "Former smoker",
                    "Every day tobacco smoker",
                ]);
                self.observation(c::SMOKING, last.date, status, Some(last.id));
            }
        }
    }

    /// Chronic conditions by age and sex, each with an onset date.
    fn chronic_conditions(&mut self, female: bool, age: i64) -> Chronic {
        let by_age = |young: f64, mid: f64, old: f64| {
            if age < 40 {
                young
            } else if age < 65 {
                mid
            } else {
                old
            }
        };
        let sex = |f: f64, m: f64| if female { f } else { m };
        let table: [(Concept, f64, i64); 20] = [
            (c::HYPERTENSION, by_age(0.08, 0.30, 0.55), 18),
            (c::HYPERLIPIDEMIA, by_age(0.05, 0.25, 0.35), 25),
            (c::DIABETES_T2, by_age(0.03, 0.13, 0.22), 20),
            (c::ASTHMA, if age >= 18 { 0.08 } else { 0.0 }, 18),
            (c::CHILD_ASTHMA, if age < 18 { 0.09 } else { 0.0 }, 2),
            (c::LOW_BACK_PAIN, 0.10, 18),
            (c::KNEE_OA, 0.15, 50),
            (c::ANXIETY, 0.05, 12),
            (c::DEPRESSION, 0.07, 12),
            (c::MIGRAINE, sex(0.08, 0.03), 12),
            (c::GERD, 0.08, 18),
            (c::HYPOTHYROIDISM, sex(0.08, 0.02), 40),
            (c::EMPHYSEMA, 0.05, 55),
            (c::CORONARY, by_age(0.0, 0.05, 0.15), 45),
            (c::HEART_FAILURE, by_age(0.0, 0.01, 0.05), 50),
            (c::AFIB, by_age(0.0, 0.02, 0.09), 50),
            (c::RHEUMATOID, sex(0.015, 0.007), 25),
            (c::HIV, 0.004, 18),
            (c::KIDNEY_TRANSPLANT, 0.003, 18),
            (c::PREDIABETES, 0.10, 25),
        ];
        let mut chronic = Chronic(Vec::new());
        for (concept, prevalence, min_age) in table {
            // Prediabetes only without diabetes.
            if concept.id == c::PREDIABETES.id && chronic.has(c::DIABETES_T2) {
                continue;
            }
            if age >= min_age && self.rng.chance(prevalence) {
                let start = self.onset(min_age);
                chronic.0.push((concept, start));
            }
        }
        let cancers = [
            (c::BREAST_CANCER, sex(0.04, 0.0), 40),
            (c::COLON_CANCER, 0.015, 50),
            (c::PROSTATE_CANCER, sex(0.0, 0.03), 55),
            (c::LUNG_CANCER, 0.01, 55),
        ];
        for (concept, prevalence, min_age) in cancers {
            if age >= min_age && self.rng.chance(prevalence) {
                // A third of cancers are recent and under chemotherapy.
                let start = if self.rng.chance(0.35) {
                    self.recent(30, 300)
                } else {
                    self.onset(min_age)
                };
                chronic.0.push((concept, start));
                break;
            }
        }
        chronic
    }
}

/// Chronic conditions and their onsets.
pub(super) struct Chronic(Vec<(Concept, NaiveDate)>);

impl Chronic {
    pub(super) fn since(&self, concept: Concept) -> Option<NaiveDate> {
        self.0
            .iter()
            .find(|(c, _)| c.id == concept.id)
            .map(|(_, s)| *s)
    }

    pub(super) fn has(&self, concept: Concept) -> bool {
        self.since(concept).is_some()
    }
}
