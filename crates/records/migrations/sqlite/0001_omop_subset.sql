-- OMOP CDM v5.4 subset used by careflow (columns careflow reads; the rest of the CDM is left out).
-- SQLite: `INTEGER PRIMARY KEY` makes the id the rowid; BIGINT has INTEGER affinity, DATE holds TEXT.
-- Dates are DATE values written 'YYYY-MM-DD'. Concept ids join to concept.concept_id.

CREATE TABLE IF NOT EXISTS concept (
    concept_id        INTEGER PRIMARY KEY,
    concept_name      TEXT NOT NULL,
    domain_id         TEXT,
    vocabulary_id     TEXT,
    concept_class_id  TEXT,
    standard_concept  TEXT,
    concept_code      TEXT,
    valid_start_date  DATE,
    valid_end_date    DATE,
    invalid_reason    TEXT
);

CREATE TABLE IF NOT EXISTS person (
    person_id             INTEGER PRIMARY KEY,
    gender_concept_id     BIGINT NOT NULL,
    year_of_birth         BIGINT NOT NULL,
    month_of_birth        BIGINT,
    day_of_birth          BIGINT,
    race_concept_id       BIGINT,
    ethnicity_concept_id  BIGINT,
    person_source_value   TEXT,
    gender_source_value   TEXT
);

CREATE TABLE IF NOT EXISTS visit_occurrence (
    visit_occurrence_id    INTEGER PRIMARY KEY,
    person_id              BIGINT NOT NULL,
    visit_concept_id       BIGINT NOT NULL,
    visit_start_date       DATE NOT NULL,
    visit_end_date         DATE,
    visit_type_concept_id  BIGINT
);
CREATE INDEX IF NOT EXISTS visit_occurrence_person ON visit_occurrence (person_id, visit_start_date);

CREATE TABLE IF NOT EXISTS condition_occurrence (
    condition_occurrence_id    INTEGER PRIMARY KEY,
    person_id                  BIGINT NOT NULL,
    condition_concept_id       BIGINT NOT NULL,
    condition_start_date       DATE NOT NULL,
    condition_end_date         DATE,
    condition_type_concept_id  BIGINT,
    visit_occurrence_id        BIGINT,
    condition_source_value     TEXT
);
CREATE INDEX IF NOT EXISTS condition_occurrence_person ON condition_occurrence (person_id, condition_start_date);

CREATE TABLE IF NOT EXISTS drug_exposure (
    drug_exposure_id          INTEGER PRIMARY KEY,
    person_id                 BIGINT NOT NULL,
    drug_concept_id           BIGINT NOT NULL,
    drug_exposure_start_date  DATE NOT NULL,
    drug_exposure_end_date    DATE,
    drug_type_concept_id      BIGINT,
    quantity                  DOUBLE PRECISION,
    days_supply               BIGINT,
    sig                       TEXT,
    route_concept_id          BIGINT,
    visit_occurrence_id       BIGINT,
    drug_source_value         TEXT
);
CREATE INDEX IF NOT EXISTS drug_exposure_person ON drug_exposure (person_id, drug_exposure_start_date);

CREATE TABLE IF NOT EXISTS procedure_occurrence (
    procedure_occurrence_id    INTEGER PRIMARY KEY,
    person_id                  BIGINT NOT NULL,
    procedure_concept_id       BIGINT NOT NULL,
    procedure_date             DATE NOT NULL,
    procedure_end_date         DATE,
    procedure_type_concept_id  BIGINT,
    visit_occurrence_id        BIGINT,
    procedure_source_value     TEXT
);
CREATE INDEX IF NOT EXISTS procedure_occurrence_person ON procedure_occurrence (person_id, procedure_date);

CREATE TABLE IF NOT EXISTS measurement (
    measurement_id               INTEGER PRIMARY KEY,
    person_id                    BIGINT NOT NULL,
    measurement_concept_id       BIGINT NOT NULL,
    measurement_date             DATE NOT NULL,
    measurement_type_concept_id  BIGINT,
    value_as_number              DOUBLE PRECISION,
    value_as_concept_id          BIGINT,
    unit_concept_id              BIGINT,
    range_low                    DOUBLE PRECISION,
    range_high                   DOUBLE PRECISION,
    visit_occurrence_id          BIGINT,
    measurement_source_value     TEXT,
    unit_source_value            TEXT,
    value_source_value           TEXT
);
CREATE INDEX IF NOT EXISTS measurement_person ON measurement (person_id, measurement_date);

CREATE TABLE IF NOT EXISTS observation (
    observation_id               INTEGER PRIMARY KEY,
    person_id                    BIGINT NOT NULL,
    observation_concept_id       BIGINT NOT NULL,
    observation_date             DATE NOT NULL,
    observation_type_concept_id  BIGINT,
    value_as_number              DOUBLE PRECISION,
    value_as_string              TEXT,
    value_as_concept_id          BIGINT,
    unit_concept_id              BIGINT,
    visit_occurrence_id          BIGINT,
    observation_source_value     TEXT
);
CREATE INDEX IF NOT EXISTS observation_person ON observation (person_id, observation_date);
