//! The concepts synthetic records use. Ids below 2,000,000,000 are the OHDSI standard ids
//! (the same rows ship in the Synthea sample's CONCEPT.csv, so both sources agree); the
//! few concepts that sample lacks use OMOP's site-specific range (≥ 2,000,000,000,
//! vocabulary `careflow`) rather than guessed standard ids.

use crate::table::{Row, Value};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Concept {
    pub id: i64,
    pub name: &'static str,
    pub domain: &'static str,
    pub vocabulary: &'static str,
    pub code: &'static str,
}

macro_rules! concepts {
    ($($ident:ident = $id:expr, $name:expr, $domain:expr, $vocab:expr, $code:expr;)*) => {
        $(pub(crate) const $ident: Concept =
            Concept { id: $id, name: $name, domain: $domain, vocabulary: $vocab, code: $code };)*
        pub(crate) const ALL: &[Concept] = &[$($ident),*];
    };
}

concepts! {
    MALE = 8507, "MALE", "Gender", "Gender", "M";
    FEMALE = 8532, "FEMALE", "Gender", "Gender", "F";
    WHITE = 8527, "White", "Race", "Race", "5";
    BLACK = 8516, "Black or African American", "Race", "Race", "3";
    ASIAN = 8515, "Asian", "Race", "Race", "2";
    HISPANIC = 38003563, "Hispanic or Latino", "Ethnicity", "Ethnicity", "Hispanic";
    NOT_HISPANIC = 38003564, "Not Hispanic or Latino", "Ethnicity", "Ethnicity", "Not Hispanic";
    EHR = 32817, "EHR", "Type Concept", "Type Concept", "OMOP4976890";
    OUTPATIENT = 9202, "Outpatient Visit", "Visit", "Visit", "OP";
    EMERGENCY = 9203, "Emergency Room Visit", "Visit", "Visit", "ER";
    INPATIENT = 9201, "Inpatient Visit", "Visit", "Visit", "IP";

    HYPERTENSION = 320128, "Essential hypertension", "Condition", "SNOMED", "59621000";
    HYPERLIPIDEMIA = 432867, "Hyperlipidemia", "Condition", "SNOMED", "55822004";
    DIABETES_T2 = 201826, "Type 2 diabetes mellitus", "Condition", "SNOMED", "44054006";
    PREDIABETES = 40316773, "Prediabetes", "Condition", "SNOMED", "15777000";
    ASTHMA = 317009, "Asthma", "Condition", "SNOMED", "195967001";
    CHILD_ASTHMA = 4051466, "Childhood asthma", "Condition", "SNOMED", "233678006";
    LOW_BACK_PAIN = 4132891, "Chronic low back pain", "Condition", "SNOMED", "278860009";
    KNEE_OA = 4079750, "Osteoarthritis of knee", "Condition", "SNOMED", "239873007";
    ANXIETY = 4214746, "Severe anxiety (panic)", "Condition", "SNOMED", "80583007";
    DEPRESSION = 4152280, "Major depressive disorder", "Condition", "SNOMED", "370143000";
    MIGRAINE = 43530652, "Chronic intractable migraine without aura", "Condition", "SNOMED", "124171000119105";
    GERD = 318800, "Gastroesophageal reflux disease", "Condition", "SNOMED", "235595009";
    HYPOTHYROIDISM = 4309027, "Idiopathic atrophic hypothyroidism", "Condition", "SNOMED", "83664006";
    EMPHYSEMA = 261325, "Pulmonary emphysema", "Condition", "SNOMED", "87433001";
    CORONARY = 317576, "Coronary arteriosclerosis", "Condition", "SNOMED", "53741008";
    HEART_FAILURE = 4229440, "Chronic congestive heart failure", "Condition", "SNOMED", "88805009";
    AFIB = 313217, "Atrial fibrillation", "Condition", "SNOMED", "49436004";
    DVT = 44782746, "Acute deep venous thrombosis", "Condition", "SNOMED", "132281000119108";
    RHEUMATOID = 80809, "Rheumatoid arthritis", "Condition", "SNOMED", "69896004";
    BREAST_CANCER = 4112853, "Malignant tumor of breast", "Condition", "SNOMED", "254837009";
    COLON_CANCER = 197500, "Primary malignant neoplasm of colon", "Condition", "SNOMED", "93761005";
    PROSTATE_CANCER = 200970, "Carcinoma in situ of prostate", "Condition", "SNOMED", "92691004";
    LUNG_CANCER = 4310703, "Non-small cell carcinoma of lung, TNM stage 1", "Condition", "SNOMED", "424132000";
    PREGNANCY = 4217975, "Normal pregnancy", "Condition", "SNOMED", "72892002";
    HIV = 2_000_000_001, "Human immunodeficiency virus infection", "Condition", "careflow", "careflow-hiv";
    KIDNEY_TRANSPLANT = 2_000_000_002, "Kidney transplant recipient", "Condition", "careflow", "careflow-ktx";
    VIRAL_SINUSITIS = 40481087, "Viral sinusitis", "Condition", "SNOMED", "444814009";
    PHARYNGITIS = 4112343, "Acute viral pharyngitis", "Condition", "SNOMED", "195662009";
    BRONCHITIS = 260139, "Acute bronchitis", "Condition", "SNOMED", "10509002";
    CYSTITIS = 195588, "Cystitis", "Condition", "SNOMED", "38822007";
    OTITIS = 372328, "Otitis media", "Condition", "SNOMED", "65363002";
    STREP_THROAT = 28060, "Streptococcal sore throat", "Condition", "SNOMED", "43878008";
    ANKLE_SPRAIN = 81151, "Sprain of ankle", "Condition", "SNOMED", "44465007";
    FEVER = 437663, "Fever", "Condition", "SNOMED", "386661006";
    COVID = 37311061, "COVID-19", "Condition", "SNOMED", "840539006";

    LISINOPRIL = 19080128, "lisinopril 10 MG Oral Tablet", "Drug", "RxNorm", "314076";
    HCTZ = 19078106, "hydrochlorothiazide 25 MG Oral Tablet", "Drug", "RxNorm", "310798";
    AMLODIPINE = 1332419, "amlodipine 5 MG Oral Tablet", "Drug", "RxNorm", "197361";
    SIMVASTATIN = 1539411, "simvastatin 20 MG Oral Tablet", "Drug", "RxNorm", "312961";
    METFORMIN = 40163924, "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", "Drug", "RxNorm", "860975";
    INSULIN = 40166274, "insulin lispro 100 UNT/ML Injectable Solution [Humalog]", "Drug", "RxNorm", "865098";
    ALBUTEROL = 1511248, "NDA020503 200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "Drug", "RxNorm", "2123111";
    FLUTICASONE = 40169216, "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler", "Drug", "RxNorm", "895994";
    PREDNISONE_20 = 1551170, "prednisone 20 MG Oral Tablet", "Drug", "RxNorm", "312615";
    PREDNISONE_5 = 1551192, "prednisone 5 MG Oral Tablet", "Drug", "RxNorm", "312617";
    METHOTREXATE = 19007332, "methotrexate 2.5 MG Oral Tablet", "Drug", "RxNorm", "105585";
    TACROLIMUS = 2_000_000_101, "tacrolimus 1 MG Oral Capsule", "Drug", "careflow", "careflow-tacrolimus-1";
    WARFARIN = 40163554, "warfarin sodium 5 MG Oral Tablet", "Drug", "RxNorm", "855332";
    APIXABAN = 2_000_000_102, "apixaban 5 MG Oral Tablet", "Drug", "careflow", "careflow-apixaban-5";
    RIVAROXABAN = 2_000_000_103, "rivaroxaban 20 MG Oral Tablet", "Drug", "careflow", "careflow-rivaroxaban-20";
    ENOXAPARIN = 40160973, "0.4 ML enoxaparin sodium 100 MG/ML Prefilled Syringe", "Drug", "RxNorm", "854235";
    ANTIRETROVIRAL = 2_000_000_104, "bictegravir 50 MG / emtricitabine 200 MG / tenofovir alafenamide 25 MG Oral Tablet", "Drug", "careflow", "careflow-bic-ftc-taf";
    SERTRALINE = 739207, "sertraline 100 MG Oral Tablet", "Drug", "RxNorm", "312938";
    LEVOTHYROXINE = 40174880, "levothyroxine sodium 0.075 MG Oral Tablet", "Drug", "RxNorm", "966222";
    CLOPIDOGREL = 19075601, "clopidogrel 75 MG Oral Tablet", "Drug", "RxNorm", "309362";
    NITROGLYCERIN = 19126352, "nitroglycerin 0.4 MG/ACTUAT Mucosal Spray", "Drug", "RxNorm", "705129";
    FUROSEMIDE = 957136, "furosemide 40 MG Oral Tablet", "Drug", "RxNorm", "313988";
    NAPROXEN = 1115171, "naproxen sodium 220 MG Oral Tablet", "Drug", "RxNorm", "849574";
    ACETAMINOPHEN = 1127433, "acetaminophen 325 MG Oral Tablet", "Drug", "RxNorm", "313782";
    IBUPROFEN = 19078461, "ibuprofen 200 MG Oral Tablet", "Drug", "RxNorm", "310965";
    AMOXICILLIN = 19073188, "amoxicillin 500 MG Oral Tablet", "Drug", "RxNorm", "308192";
    NITROFURANTOIN = 920300, "nitrofurantoin 5 MG/ML Oral Suspension", "Drug", "RxNorm", "311989";

    MED_RECONCILIATION = 4326177, "Medication Reconciliation", "Procedure", "SNOMED", "430193006";
    APPENDECTOMY = 4198190, "Appendectomy", "Procedure", "SNOMED", "80146002";
    CHOLECYSTECTOMY = 4163971, "Laparoscopic cholecystectomy", "Procedure", "SNOMED", "45595009";
    KNEE_REPLACEMENT = 43531648, "Total knee replacement", "Procedure", "SNOMED", "609588000";
    LUMPECTOMY = 4213045, "Lumpectomy of breast", "Procedure", "SNOMED", "392021009";
    CESAREAN = 4015701, "Cesarean section", "Procedure", "SNOMED", "11466000";
    CHEMOTHERAPY = 4273629, "Chemotherapy", "Procedure", "SNOMED", "367336001";

    TEMPERATURE = 3020891, "Body temperature", "Measurement", "LOINC", "8310-5";
    HEART_RATE = 3027018, "Heart rate", "Measurement", "LOINC", "8867-4";
    SYSTOLIC = 3004249, "Systolic blood pressure", "Measurement", "LOINC", "8480-6";
    DIASTOLIC = 3012888, "Diastolic blood pressure", "Measurement", "LOINC", "8462-4";
    WEIGHT = 3025315, "Body weight", "Measurement", "LOINC", "29463-7";
    HEIGHT = 3036277, "Body height", "Measurement", "LOINC", "8302-2";
    HBA1C = 3004410, "Hemoglobin A1c/Hemoglobin.total in Blood", "Measurement", "LOINC", "4548-4";
    SMOKING = 43054909, "Tobacco smoking status", "Observation", "LOINC", "72166-2";

    CELSIUS = 586323, "degree Celsius", "Unit", "UCUM", "Cel";
    PER_MINUTE = 8541, "per minute", "Unit", "UCUM", "/min";
    MM_HG = 8876, "millimeter mercury column", "Unit", "UCUM", "mm[Hg]";
    KILOGRAM = 9529, "kilogram", "Unit", "UCUM", "kg";
    CENTIMETER = 8582, "centimeter", "Unit", "UCUM", "cm";
    PERCENT = 8554, "percent", "Unit", "UCUM", "%";
}

/// Concept rows in the column order of the `concept` table.
pub(crate) fn concept_rows() -> Vec<Row> {
    ALL.iter()
        .map(|c| {
            vec![
                Value::int(c.id),
                Value::text(c.name),
                Value::text(c.domain),
                Value::text(c.vocabulary),
                Value::Text(None),
                Value::Text((c.id < 2_000_000_000).then(|| "S".to_string())),
                Value::text(c.code),
                Value::Date(None),
                Value::Date(None),
                Value::Text(None),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_rows_fit_the_table() {
        let ids: HashSet<i64> = ALL.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), ALL.len());
        assert!(concept_rows()
            .iter()
            .all(|r| r.len() == crate::table::CONCEPT.cols.len()));
    }
}
