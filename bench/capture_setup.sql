-- Tables and triggers for bench/capture.sh: two table shapes, four variants of each (same columns, same log).
--   bench_<variant>    12 columns of mixed types
--   contact_<variant>  shaped like a Heroku Connect contact: varchar fields, a date, timestamps, a boolean,
--                      an external id, the sfid with its unique index
CREATE EXTENSION pgforce CASCADE;

DO $$
DECLARE v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['none', 'pgforce', 'plpgsql', 'double'] LOOP
        EXECUTE format('CREATE TABLE public.%I (
            id serial PRIMARY KEY, sfid varchar(18), c1 text, c2 integer, c3 numeric, c4 boolean, c5 timestamptz,
            c6 text, c7 date, c8 text, _hc_lastop varchar(32), _hc_err text)', 'bench_' || v);
        EXECUTE format('CREATE UNIQUE INDEX ON public.%I (sfid)', 'bench_' || v);
        EXECUTE format('CREATE TABLE public.%I (
            id serial PRIMARY KEY, sfid varchar(18) UNIQUE, firstname varchar(40), lastname varchar(80),
            email varchar(80), phone varchar(40), mailingstreet varchar(255), mailingcity varchar(40),
            mailingpostalcode varchar(20), title varchar(128), birthdate date, createddate timestamp,
            systemmodstamp timestamp, isdeleted boolean, external_id__c varchar(36), _hc_lastop varchar(32),
            _hc_err text)', 'contact_' || v);
    END LOOP;
END $$;

SELECT salesforce.map_table('public.bench_pgforce', 'Contact');
SELECT salesforce.map_table('public.contact_pgforce', 'Contact', upsert_field => 'external_id__c');

-- Heroku Connect's VERSION 4 logger (reference §1.5), unchanged but for the two pgforce columns that must not be NULL.
CREATE FUNCTION public.bench_hc_logger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    trigger_row salesforce._trigger_log;
    excluded_cols text[] = ARRAY['_hc_lastop', '_hc_err']::text[];
BEGIN
    trigger_row = ROW();
    trigger_row.id = nextval('salesforce._trigger_log_id_seq');
    trigger_row.action = TG_OP::text;
    trigger_row.table_name = TG_TABLE_NAME::text;
    trigger_row.txid = txid_current();
    trigger_row.created_at = clock_timestamp();
    trigger_row.state = 'NEW';
    trigger_row.attempts = 0;
    IF (TG_OP = 'DELETE') THEN
        trigger_row.record_id = OLD.id;
        trigger_row.old = hstore(OLD.*) - excluded_cols;
        IF (OLD.sfid IS NOT NULL) THEN
            trigger_row.sfid = OLD.sfid;
        ELSE
            trigger_row.state = 'IGNORE';
        END IF;
    ELSEIF (TG_OP = 'INSERT') THEN
        trigger_row.record_id = NEW.id;
        trigger_row.values = hstore(NEW.*) - excluded_cols;
    ELSEIF (TG_OP = 'UPDATE') THEN
        trigger_row.record_id = NEW.id;
        trigger_row.old = hstore(OLD.*) - excluded_cols;
        trigger_row.values = (hstore(NEW.*) - hstore(trigger_row.old)) - excluded_cols;
        IF (trigger_row.values = '') THEN
            trigger_row.state = 'IGNORE';
        END IF;
        IF (OLD.sfid IS NOT NULL) THEN
            trigger_row.sfid = OLD.sfid;
        END IF;
    END IF;
    INSERT INTO salesforce._trigger_log VALUES (trigger_row.*);
    RETURN NULL;
END $$;

-- Heroku Connect's status trigger, with current_setting() instead of its pg_settings lookup.
CREATE FUNCTION public.bench_hc_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('xmlbinary') = 'base64' THEN
        NEW._hc_lastop = 'PENDING';
        NEW._hc_err = NULL;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW._hc_lastop IS NOT NULL AND NEW._hc_lastop != OLD._hc_lastop THEN
        RETURN NEW;
    END IF;
    NEW._hc_lastop = 'SYNCED';
    NEW._hc_err = NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER hc_bench_plpgsql_logtrigger AFTER INSERT OR UPDATE OR DELETE ON public.bench_plpgsql
    FOR EACH ROW WHEN (current_setting('xmlbinary') = 'base64') EXECUTE FUNCTION public.bench_hc_logger();
CREATE TRIGGER hc_bench_plpgsql_status_trigger BEFORE INSERT OR UPDATE ON public.bench_plpgsql
    FOR EACH ROW EXECUTE FUNCTION public.bench_hc_status();
CREATE TRIGGER hc_contact_plpgsql_logtrigger AFTER INSERT OR UPDATE OR DELETE ON public.contact_plpgsql
    FOR EACH ROW WHEN (current_setting('xmlbinary') = 'base64') EXECUTE FUNCTION public.bench_hc_logger();
CREATE TRIGGER hc_contact_plpgsql_status_trigger BEFORE INSERT OR UPDATE ON public.contact_plpgsql
    FOR EACH ROW EXECUTE FUNCTION public.bench_hc_status();

-- Empties every table and the log, then loads n rows per table without capturing them.
CREATE FUNCTION public.bench_reset(n integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    TRUNCATE salesforce._trigger_log;
    SET LOCAL xmlbinary = 'hex';
    FOREACH v IN ARRAY ARRAY['none', 'pgforce', 'plpgsql', 'double'] LOOP
        EXECUTE format('TRUNCATE public.%I RESTART IDENTITY', 'bench_' || v);
        EXECUTE format('INSERT INTO public.%I (c1, c2, c3, c4, c5, c6, c7, c8)
                        SELECT ''name '' || g, g, g * 1.5, g %% 2 = 0, now(), ''user'' || g || ''@example.com'', current_date, md5(g::text)
                          FROM generate_series(1, $1) g', 'bench_' || v) USING n;
        EXECUTE format('TRUNCATE public.%I RESTART IDENTITY', 'contact_' || v);
        EXECUTE format('INSERT INTO public.%I (firstname, lastname, email, phone, mailingstreet, mailingcity,
                                              mailingpostalcode, title, birthdate, createddate, systemmodstamp,
                                              isdeleted, external_id__c)
                        SELECT ''First'' || g, ''Last'' || g, ''user'' || g || ''@example.com'', ''+1 555 '' || lpad(g::text, 7, ''0''),
                               g || '' Main Street'', ''Springfield'', lpad((g %% 99999)::text, 5, ''0''), ''Engineer'',
                               date ''1980-01-01'' + g %% 10000, now(), now(), false, md5(g::text)::uuid::text
                          FROM generate_series(1, $1) g', 'contact_' || v) USING n;
    END LOOP;
END $$;
