-- Helpers the numbered migrations use.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- Adds a constraint only when a constraint of that name is not there yet (adoption-safe).
CREATE OR REPLACE FUNCTION precall._add_constraint(p_table regclass, p_name text, p_definition text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_table AND conname = p_name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, p_name, p_definition);
    END IF;
END
$function$;
