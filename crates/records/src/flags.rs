//! Keyword lists that turn concept names into the risk flags of [`careflow_core::RecordFacts`],
//! and the time windows they apply in.
//!
//! A keyword matches the start of a word (`"diabet"` matches "Type 2 diabetes mellitus" but
//! not "Prediabetes"; `"hiv"` does not match "archive"); several words match a phrase
//! ("heart failure"); a leading `*` matches anywhere inside a word (`"*ectomy"`).

/// Days a procedure counts as recent surgery.
pub(crate) const SURGERY_DAYS: i64 = 42;
/// A pregnancy condition must have started within this many months and not have ended.
pub(crate) const PREGNANCY_MONTHS: u32 = 10;
/// Anticoagulant exposures overlapping the last year count.
pub(crate) const ANTICOAGULANT_DAYS: i64 = 365;
/// Immunosuppressant exposures overlapping the last 90 days count (a steroid burst a year
/// ago does not make a patient immunosuppressed today).
pub(crate) const IMMUNOSUPPRESSANT_DRUG_DAYS: i64 = 90;
/// Immunosuppressing conditions count while active or ended within a year.
pub(crate) const IMMUNE_CONDITION_DAYS: i64 = 365;
/// Chemotherapy procedures within about six months count.
pub(crate) const CHEMOTHERAPY_DAYS: i64 = 183;

pub(crate) struct Keywords {
    pub include: &'static [&'static str],
    pub exclude: &'static [&'static str],
}

impl Keywords {
    pub fn matches(&self, name: &str) -> bool {
        let text = normalize(name);
        self.include.iter().any(|k| hit(&text, k)) && !self.exclude.iter().any(|k| hit(&text, k))
    }
}

/// Lower case, every run of non-alphanumerics one space, padded with spaces.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push(' ');
    for c in name.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

fn hit(text: &str, keyword: &str) -> bool {
    match keyword.strip_prefix('*') {
        Some(inner) => text.contains(inner),
        None => text.contains(&format!(" {keyword}")),
    }
}

pub(crate) const PREGNANCY: Keywords = Keywords {
    include: &["pregnan", "gestation", "gravid", "blighted ovum"],
    exclude: &[
        "termination",
        "miscarriage",
        "abortion",
        "not pregnant",
        "postpartum",
        "test",
        "screening",
        "history of",
    ],
};

pub(crate) const IMMUNOSUPPRESSANT_DRUGS: Keywords = Keywords {
    include: &[
        "prednisone",
        "prednisolone",
        "methylprednisolone",
        "dexamethasone",
        "methotrexate",
        "cyclosporine",
        "ciclosporin",
        "tacrolimus",
        "sirolimus",
        "everolimus",
        "mycophenol",
        "azathioprine",
        "cyclophosphamide",
        "leflunomide",
        "tofacitinib",
        "baricitinib",
        "upadacitinib",
        "infliximab",
        "adalimumab",
        "etanercept",
        "certolizumab",
        "golimumab",
        "rituximab",
        "abatacept",
        "tocilizumab",
        "fingolimod",
        "ocrelizumab",
        "natalizumab",
    ],
    exclude: &[
        "topical",
        "cream",
        "ointment",
        "ophthalmic",
        "otic",
        "nasal",
        "inhal",
    ],
};

pub(crate) const IMMUNE_CONDITIONS: Keywords = Keywords {
    include: &[
        "hiv",
        "human immunodeficiency",
        "acquired immunodeficiency",
        "immunodeficiency",
        "immunosuppress",
        "transplant",
        "chemotherapy",
        "neutropenia",
        "agranulocytosis",
        "asplenia",
        "graft versus host",
    ],
    exclude: &[
        "screening",
        "family history",
        "awaiting",
        "hiv negative",
        "exposure to",
    ],
};

pub(crate) const CHEMOTHERAPY_PROCEDURES: Keywords = Keywords {
    include: &["chemotherapy", "antineoplastic"],
    exclude: &["education", "counsel", "plan"],
};

pub(crate) const ANTICOAGULANTS: Keywords = Keywords {
    include: &[
        "warfarin",
        "apixaban",
        "rivaroxaban",
        "dabigatran",
        "edoxaban",
        "heparin",
        "enoxaparin",
        "dalteparin",
        "tinzaparin",
        "fondaparinux",
        "coumadin",
        "eliquis",
        "xarelto",
        "pradaxa",
        "lovenox",
    ],
    exclude: &["flush", "lock"],
};

pub(crate) const CANCER: Keywords = Keywords {
    include: &[
        "neoplasm",
        "cancer",
        "carcinoma",
        "malignan",
        "leukemia",
        "leukaemia",
        "lymphoma",
        "melanoma",
        "sarcoma",
        "myeloma",
        "mesothelioma",
        "*blastoma",
        "metasta",
    ],
    exclude: &[
        "benign",
        "screening",
        "family history",
        "fear of",
        "risk",
        "suspected",
    ],
};

pub(crate) const DIABETES: Keywords = Keywords {
    include: &["diabet"],
    exclude: &[
        "pre diabet",
        "insipidus",
        "screening",
        "family history",
        "risk",
    ],
};

pub(crate) const HEART_DISEASE: Keywords = Keywords {
    include: &[
        "coronary",
        "myocardial infarction",
        "heart failure",
        "cardiac failure",
        "atrial fibrillation",
        "ischemic heart",
        "ischaemic heart",
        "angina",
        "cardiomyopathy",
    ],
    exclude: &["screening", "family history", "risk", "calcium score"],
};

pub(crate) const SURGERY: Keywords = Keywords {
    include: &[
        "*ectomy",
        "*otomy",
        "*ostomy",
        "*plasty",
        "*pexy",
        "*rrhaphy",
        "surg",
        "excision",
        "resection",
        "repair",
        "transplant",
        "amputation",
        "arthroscop",
        "laparoscop",
        "cesarean",
        "caesarean",
        "ablation",
        "bypass",
        "ligation",
        "graft",
        "fixation",
        "implantation",
        "implantable",
        "stent",
        "thrombectomy",
        "knee replacement",
        "hip replacement",
        "joint replacement",
        "valve replacement",
    ],
    exclude: &[
        "assessment",
        "education",
        "counsel",
        "evaluation",
        "screening",
        "history of",
        "contracept",
        "intrauterine",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_words_not_fragments() {
        assert!(DIABETES.matches("Type 2 diabetes mellitus"));
        assert!(DIABETES.matches("Retinopathy due to type 2 diabetes mellitus"));
        assert!(!DIABETES.matches("Prediabetes"));
        assert!(!DIABETES.matches("Pre-diabetes"));
        assert!(HEART_DISEASE.matches("Chronic congestive heart failure"));
        assert!(HEART_DISEASE.matches("Coronary arteriosclerosis"));
        assert!(!HEART_DISEASE.matches("Cardiac arrest"));
        assert!(PREGNANCY.matches("Normal pregnancy"));
        assert!(!PREGNANCY.matches("Miscarriage in first trimester"));
        assert!(IMMUNE_CONDITIONS.matches("Human immunodeficiency virus infection"));
        assert!(IMMUNE_CONDITIONS.matches("HIV infection"));
        assert!(!IMMUNE_CONDITIONS.matches("Archive of records"));
        assert!(IMMUNOSUPPRESSANT_DRUGS.matches("prednisone 20 MG Oral Tablet"));
        assert!(IMMUNOSUPPRESSANT_DRUGS.matches("cyclosporine, modified 100 MG Oral Capsule"));
        assert!(!IMMUNOSUPPRESSANT_DRUGS.matches("hydrocortisone 10 MG/ML Topical Cream"));
        assert!(ANTICOAGULANTS.matches("warfarin sodium 5 MG Oral Tablet"));
        assert!(ANTICOAGULANTS.matches("1 ML heparin sodium, porcine 5000 UNT/ML Injection"));
        assert!(!ANTICOAGULANTS.matches("clopidogrel 75 MG Oral Tablet"));
        assert!(CANCER.matches("Malignant tumor of breast"));
        assert!(CANCER.matches("Non-small cell carcinoma of lung, TNM stage 1"));
        assert!(!CANCER.matches("Benign neoplasm of skin"));
        assert!(SURGERY.matches("Laparoscopic cholecystectomy"));
        assert!(SURGERY.matches("Bilateral tubal ligation"));
        assert!(!SURGERY.matches("Medication Reconciliation"));
        assert!(!SURGERY.matches("Assessment of health and social care needs"));
        assert!(!SURGERY.matches("Colonoscopy"));
        assert!(SURGERY.matches("Total knee replacement"));
        assert!(!SURGERY.matches("Replacement of intrauterine contraceptive device"));
    }
}
