-- The role that guarded, model-written SQL runs as, and the row-level security that keeps
-- it inside one patient. `Records::query_scoped` runs, inside one transaction:
--   SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = …;
--   SET LOCAL careflow.patient_id = '<id>'; SET LOCAL ROLE careflow_reader;
-- then the statement, then ROLLBACK.
--
-- careflow_reader: NOLOGIN, owns nothing, no BYPASSRLS; SELECT on the OMOP tables only.
-- Roles are cluster-wide (one for every database and schema), so creating it tolerates a
-- concurrent creator; the migrating user becomes a member so that it may SET ROLE to it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'careflow_reader') THEN
        BEGIN
            CREATE ROLE careflow_reader NOLOGIN NOINHERIT NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'careflow_reader', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT careflow_reader TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO careflow_reader', current_schema());
END
$$;

GRANT SELECT ON concept, person, visit_occurrence, condition_occurrence, drug_exposure,
    procedure_occurrence, measurement, observation TO careflow_reader;

-- Every patient table (person included; concept is the shared vocabulary and is not
-- patient data): RLS enabled and FORCED, so the tables' owner is subject to it too.
--   careflow_patient_scope (careflow_reader): only rows of the patient in
--     careflow.patient_id; none at all when it is unset or empty.
--   careflow_owner_access (the migrating user, who owns the tables and loads them): every
--     row while careflow.patient_id is unset, so loading, counts and summaries keep
--     working; only that patient's rows once it is set (a forgotten SET ROLE still scopes).
-- Superusers bypass row-level security whatever is FORCED: the scope rests on the
-- SET LOCAL ROLE, which makes the statement run as careflow_reader, a plain role.
DO $$
DECLARE
    t text;
    patient constant text :=
        $p$NULLIF(current_setting('careflow.patient_id', true), '')::bigint$p$;
BEGIN
    FOREACH t IN ARRAY ARRAY['person', 'visit_occurrence', 'condition_occurrence',
        'drug_exposure', 'procedure_occurrence', 'measurement', 'observation']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY careflow_patient_scope ON %I FOR SELECT TO careflow_reader '
            'USING (person_id = %s)', t, patient);
        EXECUTE format(
            'CREATE POLICY careflow_owner_access ON %I FOR ALL TO %I '
            'USING (%s IS NULL OR person_id = %s) WITH CHECK (true)',
            t, current_user, patient, patient);
    END LOOP;
END
$$;
