//! Treatments for chronic conditions: 90-day fills over the last year, steroid bursts.

use super::catalog as c;
use super::person::{Chronic, Gen};

impl Gen<'_> {
    pub(super) fn treat(&mut self, chronic: &Chronic, adult: bool) {
        if let Some(start) = chronic.since(c::HYPERTENSION) {
            let first = *self
                .rng
                .pick(&[c::LISINOPRIL, c::LISINOPRIL, c::HCTZ, c::AMLODIPINE]);
            self.fills(first, start);
            if self.rng.chance(0.35) {
                self.fills(c::HCTZ, start);
            }
        }
        if let Some(start) = chronic.since(c::HYPERLIPIDEMIA) {
            if self.rng.chance(0.7) {
                self.fills(c::SIMVASTATIN, start);
            }
        }
        if let Some(start) = chronic.since(c::DIABETES_T2) {
            if self.rng.chance(0.85) {
                self.fills(c::METFORMIN, start);
            }
            if self.rng.chance(0.15) {
                self.fills(c::INSULIN, start);
            }
        }
        if let Some(start) = chronic.since(c::ASTHMA).or(chronic.since(c::CHILD_ASTHMA)) {
            self.fills(c::ALBUTEROL, start);
            if self.rng.chance(0.6) {
                self.fills(c::FLUTICASONE, start);
            }
            if self.rng.chance(0.2) {
                let burst = self.recent(3, 200);
                self.drug(c::PREDNISONE_20, burst, 5, None);
            }
        }
        if (chronic.has(c::ANXIETY) || chronic.has(c::DEPRESSION)) && adult && self.rng.chance(0.6)
        {
            let start = self.recent(30, 700);
            self.fills(c::SERTRALINE, start);
        }
        if let Some(start) = chronic.since(c::HYPOTHYROIDISM) {
            self.fills(c::LEVOTHYROXINE, start);
        }
        if let Some(start) = chronic.since(c::CORONARY) {
            self.fills(c::CLOPIDOGREL, start);
            if self.rng.chance(0.4) {
                self.fills(c::NITROGLYCERIN, start);
            }
        }
        if let Some(start) = chronic.since(c::HEART_FAILURE) {
            self.fills(c::FUROSEMIDE, start);
        }
        if let Some(start) = chronic.since(c::AFIB) {
            if self.rng.chance(0.85) {
                let anticoagulants = [
                    c::APIXABAN,
                    c::APIXABAN,
                    c::APIXABAN,
                    c::WARFARIN,
                    c::WARFARIN,
                    c::RIVAROXABAN,
                ];
                let drug = *self.rng.pick(&anticoagulants);
                self.fills(drug, start);
            }
        }
        if let Some(start) = chronic.since(c::RHEUMATOID) {
            let drug = if self.rng.chance(0.7) {
                c::METHOTREXATE
            } else {
                c::PREDNISONE_5
            };
            self.fills(drug, start);
        }
        if let Some(start) = chronic.since(c::HIV) {
            self.fills(c::ANTIRETROVIRAL, start);
        }
        if let Some(start) = chronic.since(c::KIDNEY_TRANSPLANT) {
            self.fills(c::TACROLIMUS, start);
            self.fills(c::PREDNISONE_5, start);
        }
    }
}
