//! Visits with their findings, and the other dated events of a record: short illnesses,
//! cancer care, a clot, past pregnancies, surgery.

use chrono::{Duration, NaiveDate};

use super::catalog::{self as c, Concept};
use super::person::{next, Gen, Visit};
use crate::table::Value;

impl Gen<'_> {
    /// 2–8 visits over four years (more with chronic illness), the last within four months.
    pub(super) fn visits(&mut self, age: i64, chronic: usize) -> Vec<Visit> {
        let n = 2 + self.rng.between(0, 6) + chronic.min(4) as i64;
        let max_back = (self.as_of - self.birth).num_days().min(1460);
        let mut days: Vec<i64> = (0..n).map(|_| self.rng.between(0, max_back)).collect();
        days.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(last) = days.last_mut() {
            *last = self.rng.between(0, 120.min(max_back));
        }
        let mut visits = Vec::with_capacity(days.len());
        for back in days {
            let date = self.days_ago(back);
            let r = self.rng.unit();
            let (kind, stay) = if r < 0.90 {
                (c::OUTPATIENT, 0)
            } else if r < 0.97 {
                (c::EMERGENCY, 0)
            } else {
                (c::INPATIENT, self.rng.between(1, 6))
            };
            let id = next(&mut self.ids.visit);
            self.out.visit.push(vec![
                Value::int(id),
                Value::int(self.person),
                Value::int(kind.id),
                Value::date(date),
                Value::date((date + Duration::days(stay)).min(self.as_of)),
                Value::int(c::EHR.id),
            ]);
            let febrile = self.acute_illness(id, date, age);
            visits.push(Visit { id, date, febrile });
        }
        visits
    }

    /// A third of visits are for a short illness; returns whether it came with fever.
    fn acute_illness(&mut self, visit: i64, date: NaiveDate, age: i64) -> bool {
        if !self.rng.chance(0.33) {
            return false;
        }
        let options: &[(Concept, f64, Option<Concept>)] = if age < 12 {
            &[
                (c::OTITIS, 0.5, Some(c::AMOXICILLIN)),
                (c::PHARYNGITIS, 0.5, None),
                (c::STREP_THROAT, 0.7, Some(c::AMOXICILLIN)),
                (c::VIRAL_SINUSITIS, 0.2, None),
                (c::FEVER, 1.0, Some(c::ACETAMINOPHEN)),
                (c::BRONCHITIS, 0.3, None),
            ]
        } else {
            &[
                (c::VIRAL_SINUSITIS, 0.2, None),
                (c::PHARYNGITIS, 0.4, None),
                (c::BRONCHITIS, 0.3, None),
                (c::CYSTITIS, 0.2, Some(c::NITROFURANTOIN)),
                (c::ANKLE_SPRAIN, 0.0, Some(c::IBUPROFEN)),
                (c::COVID, 0.7, Some(c::ACETAMINOPHEN)),
                (c::STREP_THROAT, 0.7, Some(c::AMOXICILLIN)),
            ]
        };
        let &(concept, fever_chance, drug) = self.rng.pick(options);
        let end = (date + Duration::days(self.rng.between(7, 21))).min(self.as_of);
        self.condition(concept, date, Some(end), Some(visit));
        if let Some(drug) = drug {
            self.drug(drug, date, 10, Some(visit));
        }
        self.rng.chance(fever_chance)
    }

    /// A lumpectomy for breast cancer; chemotherapy every three weeks for recent cancers.
    pub(super) fn cancer_care(&mut self, concept: Concept, onset: NaiveDate) {
        if concept.id == c::BREAST_CANCER.id && onset + Duration::days(14) <= self.as_of {
            self.procedure(c::LUMPECTOMY, onset + Duration::days(14), None);
        }
        if (self.as_of - onset).num_days() <= 300 {
            let mut day = onset + Duration::days(21);
            while day <= self.as_of {
                self.procedure(c::CHEMOTHERAPY, day, None);
                day += Duration::days(21);
            }
        }
    }

    pub(super) fn deep_vein_thrombosis(&mut self) {
        let onset = self.recent(20, 700);
        self.condition(
            c::DVT,
            onset,
            Some((onset + Duration::days(90)).min(self.as_of)),
            None,
        );
        let drug = *self
            .rng
            .pick(&[c::APIXABAN, c::RIVAROXABAN, c::RIVAROXABAN, c::ENOXAPARIN]);
        let mut day = onset;
        while day <= self.as_of && day < onset + Duration::days(90) {
            self.drug(drug, day, 30, None);
            day += Duration::days(30);
        }
    }

    pub(super) fn past_pregnancy(&mut self, age: i64) {
        let back = self.rng.between(2 * 365, (age - 18).max(3) * 365);
        let start = self.days_ago(back);
        let end = start + Duration::days(270);
        if end >= self.as_of {
            return;
        }
        self.condition(c::PREGNANCY, start, Some(end), None);
        if self.rng.chance(0.3) {
            self.procedure(c::CESAREAN, end, None);
        }
    }

    /// 2.5% of adults had surgery in the last six weeks, 8% at some point before.
    pub(super) fn surgery(&mut self, age: i64) {
        let options: &[Concept] = if age >= 50 {
            &[c::APPENDECTOMY, c::CHOLECYSTECTOMY, c::KNEE_REPLACEMENT]
        } else {
            &[c::APPENDECTOMY, c::CHOLECYSTECTOMY]
        };
        if self.rng.chance(0.025) {
            let day = self.recent(1, 40);
            let concept = *self.rng.pick(options);
            self.procedure(concept, day, None);
        }
        if self.rng.chance(0.08) {
            let day = self.recent(120, (age - 17) * 365);
            let concept = *self.rng.pick(options);
            self.procedure(concept, day, None);
        }
    }

    /// Vital signs at every visit, weight and height, HbA1c for (pre)diabetics, and a
    /// medication reconciliation at a quarter of visits.
    pub(super) fn visit_findings(
        &mut self,
        visits: &[Visit],
        hypertension: bool,
        a1c: bool,
        diabetes: bool,
        afib: bool,
    ) {
        let adult_height = self.rng.normal(170.0, 9.0, 1);
        for (i, v) in visits.iter().enumerate() {
            let age_then = ((v.date - self.birth).num_days() / 365).max(0);
            let temperature = if v.febrile {
                (self.rng.between(380, 399) as f64) / 10.0
            } else {
                self.rng.normal(36.8, 0.25, 1)
            };
            self.measurement(c::TEMPERATURE, v.date, temperature, c::CELSIUS, v.id);
            let heart_mean = match age_then {
                0..=1 => 130.0,
                2..=11 => 95.0,
                _ => 74.0,
            } + if v.febrile { 18.0 } else { 0.0 };
            let heart_rate = self
                .rng
                .normal(heart_mean, if afib { 18.0 } else { 9.0 }, 0);
            self.measurement(c::HEART_RATE, v.date, heart_rate, c::PER_MINUTE, v.id);
            if age_then >= 3 {
                let systolic_mean = if age_then < 18 {
                    105.0
                } else {
                    112.0
                        + 0.35 * (age_then - 20).max(0) as f64
                        + if hypertension { 16.0 } else { 0.0 }
                };
                let systolic = self.rng.normal(systolic_mean, 10.0, 0);
                let diastolic = (systolic * 0.62 + self.rng.normal(4.0, 6.0, 0)).round();
                self.measurement(c::SYSTOLIC, v.date, systolic, c::MM_HG, v.id);
                self.measurement(c::DIASTOLIC, v.date, diastolic, c::MM_HG, v.id);
            }
            let weight = match age_then {
                0..=1 => 3.5 + (v.date - self.birth).num_days() as f64 / 30.0 * 0.55,
                2..=17 => 12.0 + (age_then - 2) as f64 * 3.6,
                _ => adult_height - 98.0,
            };
            let weight = (self.rng.normal(weight, weight * 0.08, 1)).max(2.0);
            self.measurement(c::WEIGHT, v.date, weight, c::KILOGRAM, v.id);
            if i == 0 && age_then >= 18 {
                self.measurement(c::HEIGHT, v.date, adult_height, c::CENTIMETER, v.id);
            }
            if a1c && age_then >= 18 && self.rng.chance(0.5) {
                let mean = if diabetes { 7.6 } else { 6.0 };
                let value = self.rng.normal(mean, if diabetes { 0.9 } else { 0.2 }, 1);
                self.measurement(c::HBA1C, v.date, value, c::PERCENT, v.id);
            }
            if self.rng.chance(0.25) {
                self.procedure(c::MED_RECONCILIATION, v.date, Some(v.id));
            }
        }
    }
}
