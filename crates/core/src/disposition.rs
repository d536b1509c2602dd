//! The disposition scale careflow decides on, after Schmitt-Thompson's telephone-triage levels
//! (see `shared/reference/red_flags.md` §7), collapsed to five clinical levels plus an `admin` route.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A triage disposition. Clinical levels are ordered by acuity: `EmergencyNow` is the highest.
/// `Admin` is not clinical (refills, scheduling) and sits outside the acuity order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Call emergency services or go to the emergency department now.
    EmergencyNow,
    /// Be seen today (within hours).
    UrgentSameDay,
    /// Be seen within 1 to 3 days.
    #[serde(rename = "within_24_72h")]
    Within24To72h,
    /// Be seen routinely, within about two weeks.
    Routine,
    /// Home care with safety-net advice.
    SelfCare,
    /// Non-clinical: refills, scheduling, paperwork.
    Admin,
}

impl Disposition {
    /// Every label, in acuity order (most urgent first), `admin` last.
    pub const ALL: [Disposition; 6] = [
        Disposition::EmergencyNow,
        Disposition::UrgentSameDay,
        Disposition::Within24To72h,
        Disposition::Routine,
        Disposition::SelfCare,
        Disposition::Admin,
    ];

    /// The wire label (`emergency_now`, …).
    pub fn label(self) -> &'static str {
        match self {
            Disposition::EmergencyNow => "emergency_now",
            Disposition::UrgentSameDay => "urgent_same_day",
            Disposition::Within24To72h => "within_24_72h",
            Disposition::Routine => "routine",
            Disposition::SelfCare => "self_care",
            Disposition::Admin => "admin",
        }
    }

    /// Acuity rank: 4 = emergency … 0 = self care; `None` for admin.
    pub fn acuity(self) -> Option<u8> {
        match self {
            Disposition::EmergencyNow => Some(4),
            Disposition::UrgentSameDay => Some(3),
            Disposition::Within24To72h => Some(2),
            Disposition::Routine => Some(1),
            Disposition::SelfCare => Some(0),
            Disposition::Admin => None,
        }
    }

    /// Whether this decision is below `floor` in acuity (the critical under-triage error).
    /// A clinical floor is never satisfied by `admin`.
    pub fn is_below(self, floor: Disposition) -> bool {
        match (self.acuity(), floor.acuity()) {
            (Some(a), Some(f)) => a < f,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// The more urgent of two dispositions (a clinical level wins over admin).
    pub fn max_acuity(self, other: Disposition) -> Disposition {
        if other.is_below(self) || other == self {
            self
        } else if self.is_below(other) {
            other
        } else {
            self
        }
    }

    /// One line a person understands.
    pub fn patient_phrase(self) -> &'static str {
        match self {
            Disposition::EmergencyNow => {
                "Call emergency services or go to the emergency department now."
            }
            Disposition::UrgentSameDay => "Get seen today (urgent care or a same-day appointment).",
            Disposition::Within24To72h => "Book an appointment within the next 1 to 3 days.",
            Disposition::Routine => "Book a routine appointment within about two weeks.",
            Disposition::SelfCare => "Care for this at home, and contact us if it gets worse.",
            Disposition::Admin => "Routed to the practice team (non-clinical request).",
        }
    }

    /// The 3-level scale used by published portal-triage studies:
    /// emergent / non_emergent / self_care. `admin` has no clinical level.
    pub fn to_three_level(self) -> Option<&'static str> {
        match self {
            Disposition::EmergencyNow => Some("emergent"),
            Disposition::UrgentSameDay | Disposition::Within24To72h | Disposition::Routine => {
                Some("non_emergent")
            }
            Disposition::SelfCare => Some("self_care"),
            Disposition::Admin => None,
        }
    }

    /// The 4-level scale: emergent / within_1_day / within_1_week / self_care.
    /// `within_24_72h` maps to within_1_week: its upper bound (72 h) is past one day.
    pub fn to_four_level(self) -> Option<&'static str> {
        match self {
            Disposition::EmergencyNow => Some("emergent"),
            Disposition::UrgentSameDay => Some("within_1_day"),
            Disposition::Within24To72h | Disposition::Routine => Some("within_1_week"),
            Disposition::SelfCare => Some("self_care"),
            Disposition::Admin => None,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A label that is not on careflow's scale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown disposition `{0}` (expected one of emergency_now, urgent_same_day, within_24_72h, routine, self_care, admin)")]
pub struct ParseDispositionError(pub String);

impl FromStr for Disposition {
    type Err = ParseDispositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Disposition::ALL
            .into_iter()
            .find(|d| d.label() == s.trim())
            .ok_or_else(|| ParseDispositionError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acuity_order_and_floor() {
        assert!(Disposition::SelfCare.is_below(Disposition::Routine));
        assert!(Disposition::Admin.is_below(Disposition::SelfCare));
        assert!(!Disposition::EmergencyNow.is_below(Disposition::UrgentSameDay));
        assert!(!Disposition::Routine.is_below(Disposition::Admin));
        assert_eq!(
            Disposition::Routine.max_acuity(Disposition::EmergencyNow),
            Disposition::EmergencyNow
        );
        assert_eq!(
            Disposition::Admin.max_acuity(Disposition::SelfCare),
            Disposition::SelfCare
        );
    }

    #[test]
    fn labels_round_trip_through_text_and_json() {
        for d in Disposition::ALL {
            assert_eq!(d.label().parse::<Disposition>(), Ok(d));
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.label()));
        }
        assert!("urgent".parse::<Disposition>().is_err());
    }

    #[test]
    fn published_scales() {
        assert_eq!(
            Disposition::Within24To72h.to_four_level(),
            Some("within_1_week")
        );
        assert_eq!(
            Disposition::UrgentSameDay.to_three_level(),
            Some("non_emergent")
        );
        assert_eq!(Disposition::Admin.to_three_level(), None);
    }
}
