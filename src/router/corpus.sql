-- The classifier's corpus: every statement with the verdict of router::classify::classify.
--
-- An entry is a header line `--- read|write [reason=<Reason>] [txn=<TxnEffect>]`
-- followed by the statement (one or more lines) up to the next header. Statements are
-- classified with write_functions = my_schema.bump_counter, audit.log_event,
-- touch_session (corpus::WRITE_FUNCTIONS). No statement line may start with `--- `.
--
-- Checked by `cargo test --lib router` (the verdicts below) and, with
-- `--features pg-query-oracle`, against PostgreSQL's own parser: the classifier must
-- never say read where pg_query's parse tree shows a write.

-- ============================================================ plain reads
--- read reason=Read
SELECT 1
--- read reason=Read
select now()
--- read reason=Read
SELECT * FROM users WHERE id = $1
--- read reason=Read
SELECT id, email FROM users WHERE email = 'a@example.com' LIMIT 1
--- read reason=Read
SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'
--- read reason=Read
SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = ANY($1::int[])
--- read reason=Read
SELECT DISTINCT ON (customer_id) customer_id, created_at FROM orders ORDER BY customer_id, created_at DESC
--- read reason=Read
SELECT a, b FROM t1 UNION ALL SELECT a, b FROM t2
--- read reason=Read
(SELECT 1) UNION (SELECT 2)
--- read reason=Read
((SELECT a FROM t) EXCEPT (SELECT a FROM s)) ORDER BY 1
--- read reason=Read
SELECT a FROM t INTERSECT SELECT a FROM s
--- read reason=Read
VALUES (1)
--- read reason=Read
VALUES (1, 'one'), (2, 'two') ORDER BY 1
--- read reason=Read
TABLE t
--- read reason=Read
TABLE ONLY measurements
--- read reason=Read
SELECT 1;
--- read reason=Read
SELECT 1 ;  ;
--- read reason=Read
  
  select 42 as answer
--- read reason=Read
SELECT * FROM generate_series(1, 10) AS g(n)
--- read reason=Read
SELECT x, row_number() OVER (PARTITION BY y ORDER BY z) FROM t
--- read reason=Read
SELECT * FROM t TABLESAMPLE SYSTEM (10)
--- read reason=Read
SELECT * FROM t WHERE EXISTS (SELECT 1 FROM s WHERE s.id = t.id)
--- read reason=Read
SELECT * FROM t, LATERAL (SELECT * FROM s WHERE s.t_id = t.id LIMIT 3) x
--- read reason=Read
SELECT jsonb_build_object('id', id, 'tags', array_agg(tag)) FROM posts GROUP BY id HAVING count(*) > 1
--- read reason=Read
SELECT data->>'name', data #> '{a,b}' FROM docs WHERE data @> '{"kind": "x"}'
--- read reason=Read
SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t
--- read reason=Read
SELECT substring(name FROM 1 FOR 3), overlay(name PLACING 'x' FROM 2 FOR 1) FROM t
--- read reason=Read
SELECT * FROM t ORDER BY id OFFSET 10 ROWS FETCH FIRST 10 ROWS ONLY
--- read reason=Read
SELECT * FROM t FETCH FIRST 5 ROWS WITH TIES
--- read reason=Read
SELECT * FROM t FOR READ ONLY
--- read reason=Read
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()
--- read reason=Read
SELECT currval_name, nextval_count FROM sequence_stats
--- read reason=Read
SELECT lo_get(16400)
--- read reason=Read
SELECT pg_sleep(0.1)
--- read reason=Read
SELECT gen_random_uuid(), random(), clock_timestamp()
--- read reason=Read
SELECT t.* FROM t WHERE t.id IN (SELECT id FROM s WHERE s.flag)
--- read reason=Read
SELECT $1::text, $2::int
--- read reason=Read
SELECT * FROM ROWS FROM (generate_series(1, 3), unnest(ARRAY['a', 'b'])) AS x(n, s)
--- read reason=Read
SELECT xmlelement(name foo, 'bar')
--- read reason=Read
SELECT last_value FROM my_sequence
--- read reason=Read
SELECT * FROM pg_stat_activity WHERE state = 'active'
--- write reason=WriteFunction
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')
--- read reason=Read
SELECT bump_counter FROM counters
--- read reason=Read
select 1 as "update", 2 as "delete", 3 as "into"
--- read reason=Read
SELECT pg_catalog.lower(name) FROM t
--- read reason=Read
SELECT 'FOR UPDATE' AS note
--- read reason=Read
SELECT * FROM "Order" WHERE "Order"."Status" = 'open'

-- ============================================================ SHOW
--- read reason=Read
SHOW search_path
--- read reason=Read
SHOW ALL
--- read reason=Read
show transaction_read_only
--- read reason=Read
SHOW TIME ZONE
--- read reason=Read
SHOW server_version_num

-- ============================================================ CTEs
--- read reason=Read
WITH x AS (SELECT 1 AS a) SELECT * FROM x
--- read reason=Read
WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 100) SELECT sum(n) FROM t
--- read reason=Read
WITH a AS MATERIALIZED (SELECT * FROM big), b AS NOT MATERIALIZED (SELECT * FROM a) SELECT count(*) FROM b
--- read reason=Read
WITH RECURSIVE tree AS (SELECT id, parent_id FROM nodes WHERE id = $1 UNION ALL SELECT n.id, n.parent_id FROM nodes n JOIN tree ON n.parent_id = tree.id) SEARCH DEPTH FIRST BY id SET ordercol SELECT * FROM tree ORDER BY ordercol
--- write reason=DataModifyingCte
WITH x AS (INSERT INTO t (a) VALUES (1) RETURNING *) SELECT * FROM x
--- write reason=DataModifyingCte
WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) INSERT INTO done SELECT * FROM moved
--- write reason=DataModifyingCte
WITH u AS (UPDATE accounts SET balance = balance - 10 WHERE id = 1 RETURNING id) SELECT count(*) FROM u
--- write reason=DataModifyingCte
WITH d AS (DELETE FROM sessions WHERE expires_at < now() RETURNING 1) SELECT count(*) FROM d
--- write reason=DataModifyingCte
WITH src AS (SELECT 1 AS id) INSERT INTO t (id) SELECT id FROM src
--- write reason=DataModifyingCte
WITH src AS (SELECT * FROM staging) UPDATE t SET v = src.v FROM src WHERE t.id = src.id
--- write reason=DataModifyingCte
WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v RETURNING t.id) SELECT * FROM m
--- write reason=DataModifyingCte
with recursive r as (select 1 as n), ins as (insert into log(n) select n from r returning n) select * from ins
--- write reason=Locking
WITH c AS (SELECT id FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE jobs SET state = 'running' FROM c WHERE jobs.id = c.id RETURNING jobs.*
--- write reason=Locking
WITH x AS (SELECT * FROM t FOR SHARE) SELECT * FROM x
--- write reason=WriteFunction
WITH s AS (SELECT nextval('ids') AS id) SELECT id FROM s

-- ============================================================ locking clauses
--- write reason=Locking
SELECT * FROM accounts WHERE id = 1 FOR UPDATE
--- write reason=Locking
SELECT * FROM accounts WHERE id = 1 FOR NO KEY UPDATE
--- write reason=Locking
SELECT * FROM accounts WHERE id = 1 FOR NO KEY UPDATE NOWAIT
--- write reason=Locking
SELECT * FROM accounts WHERE id = 1 FOR SHARE
--- write reason=Locking
SELECT * FROM accounts WHERE id = 1 FOR KEY SHARE
--- write reason=Locking
SELECT * FROM jobs ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED
--- write reason=Locking
SELECT a.* FROM a JOIN b ON a.id = b.a_id FOR UPDATE OF a NOWAIT
--- write reason=Locking
SELECT * FROM a FOR UPDATE OF a FOR SHARE OF b
--- write reason=Locking
select * from t for update
--- write reason=Locking
SELECT * FROM (SELECT * FROM t WHERE id = 1 FOR UPDATE) sub
--- write reason=Locking
SELECT * FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 5 FOR UPDATE)
--- write reason=Locking
TABLE t FOR UPDATE
--- write reason=Locking
SELECT * FROM t FOR /* hmm */ UPDATE
--- write reason=Locking
SELECT * FROM t FOR
  NO
  KEY
  UPDATE

-- ============================================================ SELECT INTO
--- write reason=SelectInto
select * into t2 from t
--- write reason=SelectInto
SELECT id, name INTO TEMP TABLE tmp_users FROM users
--- write reason=SelectInto
SELECT * INTO UNLOGGED backup_orders FROM orders WHERE created_at < '2020-01-01'
--- write reason=SelectInto
SELECT 1 AS a INTO new_table

-- ============================================================ built-in write functions
--- write reason=WriteFunction
SELECT nextval('s')
--- write reason=WriteFunction
select "nextval"('s')
--- write reason=WriteFunction
SELECT pg_catalog.nextval('public.orders_id_seq'::regclass)
--- write reason=WriteFunction
SELECT "pg_catalog"."nextval"('s')
--- write reason=WriteFunction
SELECT NEXTVAL ( 's' )
--- write reason=WriteFunction
SELECT setval('s', 100, true)
--- write reason=WriteFunction
SELECT currval('s')
--- write reason=WriteFunction
SELECT lastval()
--- write reason=WriteFunction
SELECT pg_advisory_lock(42)
--- write reason=WriteFunction
SELECT pg_advisory_xact_lock(1)
--- write reason=WriteFunction
SELECT pg_advisory_lock_shared(1, 2)
--- write reason=WriteFunction
SELECT pg_try_advisory_lock(hashtext('migrations'))
--- write reason=WriteFunction
SELECT pg_try_advisory_xact_lock_shared(7)
--- write reason=WriteFunction
SELECT pg_advisory_unlock(42)
--- write reason=WriteFunction
SELECT pg_advisory_unlock_all()
--- write reason=WriteFunction
SELECT set_config('app.user_id', '42', true)
--- write reason=WriteFunction
SELECT pg_catalog.set_config('search_path', '', false)
--- write reason=WriteFunction
SELECT pg_notify('events', '{"id": 1}')
--- write reason=WriteFunction
SELECT lo_create(0)
--- write reason=WriteFunction
SELECT lo_creat(-1)
--- write reason=WriteFunction
SELECT lo_import('/tmp/file')
--- write reason=WriteFunction
SELECT lo_unlink(16400)
--- write reason=WriteFunction
SELECT lo_put(16400, 0, '\x00ff')
--- write reason=WriteFunction
SELECT lo_from_bytea(0, 'hello')
--- write reason=WriteFunction
SELECT lo_open(16400, 131072)
--- write reason=WriteFunction
SELECT lowrite(0, 'data')
--- write reason=WriteFunction
SELECT txid_current()
--- write reason=WriteFunction
SELECT pg_current_xact_id()
--- write reason=WriteFunction
SELECT pg_switch_wal()
--- write reason=WriteFunction
SELECT pg_create_restore_point('before_migration')
--- write reason=WriteFunction
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction'
--- write reason=WriteFunction
SELECT pg_cancel_backend(12345)
--- write reason=WriteFunction
SELECT pg_reload_conf()
--- write reason=WriteFunction
SELECT pg_stat_reset()
--- write reason=WriteFunction
SELECT pg_stat_reset_shared('bgwriter')
--- write reason=WriteFunction
SELECT pg_stat_statements_reset()
--- write reason=WriteFunction
SELECT * FROM dblink_exec('dbname=other', 'DELETE FROM t')
--- write reason=WriteFunction
SELECT * FROM dblink('dbname=other', 'SELECT 1') AS t(a int)
--- write reason=WriteFunction
SELECT pg_create_logical_replication_slot('slot', 'pgoutput')
--- write reason=WriteFunction
SELECT pg_drop_replication_slot('slot')
--- write reason=WriteFunction
SELECT * FROM pg_logical_slot_get_changes('slot', NULL, NULL)
--- write reason=WriteFunction
SELECT pg_logical_emit_message(true, 'prefix', 'content')
--- write reason=WriteFunction
SELECT id FROM orders WHERE id = nextval('s')
--- write reason=WriteFunction
SELECT * FROM nextval('s')
--- write reason=WriteFunction
VALUES (nextval('s'), 'x')
--- write reason=WriteFunction
SELECT coalesce(max(id), 0) + 1, nextval('s') FROM t
--- write reason=WriteFunction
SELECT CASE WHEN $1 THEN pg_advisory_xact_lock(1) END
--- write reason=WriteFunction
SELECT U&"\006eextval"('s')

-- ============================================================ configured write functions
--- write reason=WriteFunction
SELECT my_schema.bump_counter()
--- write reason=WriteFunction
SELECT bump_counter()
--- write reason=WriteFunction
SELECT "my_schema"."bump_counter"()
--- write reason=WriteFunction
SELECT * FROM My_Schema.Bump_Counter(5)
--- write reason=WriteFunction
SELECT audit.log_event('login', $1)
--- write reason=WriteFunction
SELECT touch_session($1)
--- write reason=WriteFunction
SELECT public.touch_session($1)
--- write reason=WriteFunction
SELECT s.touch_session FROM sessions s
--- write reason=WriteFunction
SELECT other.log_event('x')

-- ============================================================ writes: DML
--- write reason=Write
INSERT INTO t (a) VALUES (1)
--- write reason=Write
INSERT INTO t (a, b) VALUES (1, 'x') RETURNING *
--- write reason=Write
insert into t select * from s
--- write reason=Write
INSERT INTO t DEFAULT VALUES RETURNING id
--- write reason=Write
INSERT INTO counters (k, n) VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET n = counters.n + 1
--- write reason=Write
INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING
--- write reason=Write
UPDATE t SET a = a + 1 WHERE id = $1
--- write reason=Write
UPDATE t SET (a, b) = (SELECT a, b FROM s WHERE s.id = t.id) RETURNING t.id
--- write reason=Write
UPDATE ONLY t SET a = DEFAULT
--- write reason=Write
DELETE FROM t WHERE id = 1
--- write reason=Write
DELETE FROM t USING s WHERE t.s_id = s.id AND s.gone
--- write reason=Write
delete from t returning *
--- write reason=Write
MERGE INTO inventory i USING shipments s ON i.sku = s.sku WHEN MATCHED THEN UPDATE SET qty = i.qty + s.qty WHEN NOT MATCHED THEN INSERT (sku, qty) VALUES (s.sku, s.qty)
--- write reason=Write
TRUNCATE t
--- write reason=Write
TRUNCATE TABLE a, b RESTART IDENTITY CASCADE
--- write reason=Write
COPY t FROM STDIN WITH (FORMAT csv)
--- write reason=Write
COPY t TO STDOUT
--- write reason=Write
COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH (FORMAT binary)
--- write reason=Write
CALL process_batch(100)
--- write reason=Write
DO $$ BEGIN PERFORM pg_sleep(0); END $$
--- write reason=Write
DO LANGUAGE plpgsql $body$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM t; END $body$

-- ============================================================ writes: DDL and utility
--- write reason=Write
CREATE TABLE t (id bigserial PRIMARY KEY, a text NOT NULL)
--- write reason=Write
CREATE TEMP TABLE tmp (a int) ON COMMIT DROP
--- write reason=Write
CREATE TABLE t2 AS SELECT * FROM t
--- write reason=Write
CREATE INDEX CONCURRENTLY idx_t_a ON t (a)
--- write reason=Write
CREATE UNIQUE INDEX IF NOT EXISTS ux ON t (lower(email))
--- write reason=Write
CREATE VIEW v AS SELECT * FROM t
--- write reason=Write
CREATE MATERIALIZED VIEW mv AS SELECT count(*) FROM t
--- write reason=Write
CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$
--- write reason=Write
CREATE SEQUENCE s START 1
--- write reason=Write
CREATE SCHEMA IF NOT EXISTS app
--- write reason=Write
CREATE EXTENSION IF NOT EXISTS pgcrypto
--- write reason=Write
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')
--- write reason=Write
CREATE ROLE reader LOGIN
--- write reason=Write
ALTER TABLE t ADD COLUMN b int
--- write reason=Write
ALTER TABLE t ALTER COLUMN a SET DEFAULT 'x'
--- write reason=Write
ALTER SEQUENCE s RESTART WITH 1
--- write reason=Write
ALTER ROLE app SET statement_timeout = '5s'
--- write reason=Write
ALTER SYSTEM SET work_mem = '64MB'
--- write reason=Write
DROP TABLE IF EXISTS t CASCADE
--- write reason=Write
DROP INDEX CONCURRENTLY idx
--- write reason=Write
GRANT SELECT ON t TO reader
--- write reason=Write
REVOKE ALL ON t FROM PUBLIC
--- write reason=Write
COMMENT ON TABLE t IS 'for update'
--- write reason=Write
VACUUM (ANALYZE) t
--- write reason=Write
ANALYZE t
--- write reason=Write
CLUSTER t USING idx
--- write reason=Write
REINDEX TABLE t
--- write reason=Write
REFRESH MATERIALIZED VIEW CONCURRENTLY mv
--- write reason=Write
LOCK TABLE t IN ACCESS EXCLUSIVE MODE
--- write reason=Write
CHECKPOINT
--- write reason=Write
NOTIFY events, 'payload'
--- write reason=Write
LISTEN events
--- write reason=Write
UNLISTEN *
--- write reason=Write
LOAD 'auto_explain'
--- write reason=Write
PREPARE q (int) AS SELECT * FROM t WHERE id = $1
--- write reason=Write
EXECUTE q(1)
--- write reason=Write
DEALLOCATE q
--- write reason=Write
DEALLOCATE ALL
--- write reason=Write
DECLARE c CURSOR FOR SELECT * FROM t
--- write reason=Write
DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t
--- write reason=Write
FETCH 100 FROM c
--- write reason=Write
MOVE NEXT IN c
--- write reason=Write
CLOSE c
--- write reason=Write
SECURITY LABEL ON TABLE t IS 'secret'
--- write reason=Write
IMPORT FOREIGN SCHEMA public FROM SERVER other INTO local
--- write reason=Write
REASSIGN OWNED BY old_role TO new_role
--- write reason=Write
SET search_path TO app, public
--- write reason=Write
SET statement_timeout = '5s'
--- write reason=Write
SET LOCAL work_mem = '1MB'
--- write reason=Write
SET TIME ZONE 'UTC'
--- write reason=Write
SET ROLE app_reader
--- write reason=Write
SET SESSION AUTHORIZATION DEFAULT
--- write reason=Write
RESET search_path
--- write reason=Write
DISCARD PLANS

-- ============================================================ EXPLAIN
--- read reason=Read
EXPLAIN SELECT * FROM t
--- read reason=Read
EXPLAIN ANALYZE SELECT * FROM t WHERE a = 1
--- read reason=Read
EXPLAIN ANALYSE VERBOSE SELECT 1
--- read reason=Read
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t
--- read reason=Read
EXPLAIN (COSTS OFF, SETTINGS true) WITH x AS (SELECT 1) SELECT * FROM x
--- read reason=Read
EXPLAIN VALUES (1)
--- write reason=Write
EXPLAIN ANALYZE INSERT INTO t VALUES (1)
--- write reason=Write
EXPLAIN UPDATE t SET a = 1
--- write reason=Write
EXPLAIN (ANALYZE) DELETE FROM t
--- write reason=Locking
EXPLAIN SELECT * FROM t FOR UPDATE
--- write reason=WriteFunction
EXPLAIN ANALYZE SELECT nextval('s')
--- write reason=DataModifyingCte
EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x
--- write reason=Write
EXPLAIN CREATE TABLE t3 AS SELECT 1
--- write reason=Write
EXPLAIN EXECUTE q(1)

-- ============================================================ transaction control
--- write reason=Transaction txn=Begin
BEGIN
--- write reason=Transaction txn=Begin
begin;
--- write reason=Transaction txn=Begin
BEGIN WORK
--- write reason=Transaction txn=Begin
BEGIN TRANSACTION
--- write reason=Transaction txn=Begin
START TRANSACTION
--- write reason=Transaction txn=Begin
BEGIN ISOLATION LEVEL READ COMMITTED
--- write reason=Transaction txn=Begin
START TRANSACTION ISOLATION LEVEL REPEATABLE READ
--- write reason=Transaction txn=Begin
BEGIN NOT DEFERRABLE
--- read reason=Transaction txn=BeginReadOnly
BEGIN READ ONLY
--- read reason=Transaction txn=BeginReadOnly
BEGIN TRANSACTION READ ONLY
--- read reason=Transaction txn=BeginReadOnly
START TRANSACTION READ ONLY
--- read reason=Transaction txn=BeginReadOnly
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY
--- read reason=Transaction txn=BeginReadOnly
START TRANSACTION ISOLATION LEVEL READ COMMITTED READ ONLY
--- read reason=Transaction txn=BeginReadOnly
begin read only, isolation level repeatable read, not deferrable
--- write reason=Transaction txn=BeginPrimary
START TRANSACTION READ WRITE
--- write reason=Transaction txn=BeginPrimary
BEGIN READ WRITE
--- write reason=Transaction txn=BeginPrimary
BEGIN ISOLATION LEVEL SERIALIZABLE
--- write reason=Transaction txn=BeginPrimary
BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE
--- read reason=Transaction txn=SetTransactionReadOnly
SET TRANSACTION READ ONLY
--- read reason=Transaction txn=SetTransactionReadOnly
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY
--- read reason=Transaction txn=SetTransactionReadOnly
SET LOCAL transaction_read_only = on
--- read reason=Transaction txn=SetTransactionReadOnly
SET LOCAL TRANSACTION READ ONLY
--- write reason=Transaction txn=SetTransaction
SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE
--- write reason=Transaction txn=None
SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
--- write reason=Transaction txn=SetTransaction
SET TRANSACTION READ WRITE
--- write reason=Transaction txn=SetTransaction
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE
--- write reason=Transaction txn=SetTransaction
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ
--- write reason=Transaction txn=SetTransaction
SET TRANSACTION SNAPSHOT '00000003-0000001B-1'
--- write reason=Transaction txn=SetTransaction
SET transaction_isolation = 'serializable'
--- read reason=Transaction txn=SetSessionReadOnly
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
--- read reason=Transaction txn=SetSessionReadOnly
SET default_transaction_read_only = on
--- read reason=Transaction txn=SetSessionReadOnly
SET SESSION default_transaction_read_only TO true
--- write reason=Transaction txn=ClearSessionReadOnly
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE
--- write reason=Transaction txn=ClearSessionReadOnly
SET default_transaction_read_only = off
--- write reason=Transaction txn=None
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED
--- write reason=Write txn=ClearSessionReadOnly
RESET default_transaction_read_only
--- write reason=Write txn=ClearSessionReadOnly
RESET ALL
--- write reason=Write txn=ClearSessionReadOnly
DISCARD ALL
--- write reason=Transaction txn=End
COMMIT
--- write reason=Transaction txn=End
COMMIT WORK
--- write reason=Transaction txn=End
commit transaction
--- write reason=Transaction txn=End
END
--- write reason=Transaction txn=End
END TRANSACTION
--- write reason=Transaction txn=End
ROLLBACK
--- write reason=Transaction txn=End
ROLLBACK WORK
--- write reason=Transaction txn=End
ABORT
--- write reason=Transaction txn=End
COMMIT AND NO CHAIN
--- write reason=Transaction txn=EndAndChain
COMMIT AND CHAIN
--- write reason=Transaction txn=EndAndChain
ROLLBACK AND CHAIN
--- write reason=Transaction txn=Savepoint
SAVEPOINT sp1
--- write reason=Transaction txn=ReleaseSavepoint
RELEASE SAVEPOINT sp1
--- write reason=Transaction txn=ReleaseSavepoint
RELEASE sp1
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TO SAVEPOINT sp1
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TO sp1
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TRANSACTION TO SAVEPOINT sp1
--- write reason=Transaction txn=PrepareTransaction
PREPARE TRANSACTION 'tx-42'
--- write reason=Transaction txn=CommitPrepared
COMMIT PREPARED 'tx-42'
--- write reason=Transaction txn=RollbackPrepared
ROLLBACK PREPARED 'tx-42'

-- ============================================================ hints
--- read reason=Hint
/* pgmux:replica */ SELECT 1
--- read reason=Hint
/* pgmux:replica */ SELECT my_schema.bump_counter()
--- write reason=Hint
/* pgmux:primary */ SELECT * FROM users WHERE id = 1
--- read reason=Hint
-- pgmux:replica
SELECT count(*) FROM events
--- write reason=Hint
/*pgmux:primary*/SELECT 1
--- write reason=Hint
/* controller:orders */ /* pgmux:primary reason=read-after-write */ SELECT * FROM orders WHERE id = $1
--- read reason=Read
SELECT 1 /* pgmux:replica */
--- write reason=WriteFunction
SELECT /* pgmux:replica */ nextval('s')
--- read reason=Read
/* pgmux:replicas */ SELECT 1

-- ============================================================ lexical traps
--- read reason=Read
SELECT 'nextval(' 
--- read reason=Read
SELECT 'a; DELETE FROM t'
--- read reason=Read
SELECT 'it''s; update t set a = 1'
--- read reason=Read
SELECT E'it\'s; delete from t'
--- read reason=Read
SELECT e'\\'' FOR UPDATE'
--- read reason=Read
SELECT $$ FOR UPDATE; INSERT INTO t VALUES (1) $$
--- read reason=Read
SELECT $fn$ nextval('s') $fn$, $x$ ; $x$
--- read reason=Read
SELECT $a$ $b$ ; $b$ $a$
--- read reason=Read
SELECT 1 -- ; DELETE FROM t
--- read reason=Read
SELECT 1 /* ; DELETE FROM t */
--- read reason=Read
SELECT /* outer /* nested; */ still comment; */ 1
--- read reason=Read
SELECT "a;b", "x""; delete" FROM t
--- read reason=Read
SELECT U&'\0041; drop table t'
--- read reason=Read
SELECT $1, $2 FROM t WHERE a = $3
--- read reason=Read
SELECT B'1010', X'FF', N'national'
--- read reason=Read
SELECT 'a' 'b'
--- read reason=Read
SELECT 1 FROM t WHERE name LIKE 'x\%'
--- write reason=Locking
SELECT 1 -- comment
FOR UPDATE
--- write reason=WriteFunction
SELECT 1, /* c */ nextval /* c */ ('s')
--- write reason=Locking
SELECT 'x' FROM t FOR UPDATE
--- write reason=Unknown
SELECT 'unterminated
--- write reason=Unknown
SELECT "unterminated
--- write reason=Unknown
SELECT $$ unterminated
--- write reason=Unknown
SELECT 1 /* unterminated
--- write reason=Unknown
SELECT E'unterminated\'
--- write reason=Unknown
SELECT 'a\', nextval('s') --'
--- write reason=Unknown
SELECT u1_0.id FROM users u1_0 WHERE u1_0.name LIKE $1 ESCAPE '\'
--- write reason=WriteFunction
SELECT 1 AS a$$, nextval('s') --$$
--- read reason=Read
SELECT $a$$, nextval('s') $a$
--- read reason=Read
SELECT /* /* */ nextval('s') */ 1
--- write reason=WriteFunction
SELECT E'\\', nextval('s') --'
--- read reason=Read
WITH "insert" AS (SELECT 1) SELECT * FROM "insert"
--- write reason=DataModifyingCte
WITH insert AS (SELECT 1) SELECT * FROM insert
--- write reason=DataModifyingCte
SELECT update FROM t
--- read reason=Read
SELECT excluded.update, t.delete, t.into FROM t
--- write reason=Locking
SELECT substring(name FOR key) FROM t
--- read reason=Read
SELECT COLLATION FOR ('foo')
--- read reason=Read
SELECT * FROM XMLTABLE('/r/x' PASSING '<r><x>1</x></r>'::xml COLUMNS id FOR ORDINALITY, v text PATH '.')
--- read reason=Read
EXPLAIN (ANALYZE) (SELECT 1)
--- read reason=Read
EXPLAIN ANALYZE VERBOSE (SELECT 1) UNION (SELECT 2)
--- write reason=WriteFunction
SELECT * FROM t, LATERAL pg_advisory_lock(t.id) AS l
--- write reason=WriteFunction
SELECT public."lo_unlink"(16400)
--- write reason=WriteFunction
SELECT int4(nextval('s'))
--- write reason=WriteFunction
SELECT f(a => nextval('s'))
--- write reason=WriteFunction
SELECT * FROM t WHERE EXISTS (SELECT pg_advisory_xact_lock(t.id))
--- write reason=WriteFunction
SELECT pg_wal_replay_pause()
--- write reason=WriteFunction
SELECT brin_summarize_new_values('idx'::regclass)
--- read reason=Read
SELECT txid_current_if_assigned(), pg_current_xact_id_if_assigned(), txid_current_snapshot()
--- write reason=Locking
SELECT 1 FOR UPDATE
--- write reason=Locking
VALUES (1) FOR UPDATE

-- ============================================================ several statements
--- write reason=MultiStatement
SELECT 1; DELETE FROM t
--- write reason=MultiStatement
SELECT 1; SELECT 2
--- write reason=MultiStatement txn=Mixed
BEGIN; SELECT 1; COMMIT
--- write reason=MultiStatement txn=Mixed
BEGIN READ ONLY; SELECT * FROM t; COMMIT;
--- write reason=MultiStatement
SET search_path = app; SELECT * FROM t
--- write reason=MultiStatement
SELECT 1;
SELECT 2;
--- write reason=MultiStatement
select 'a;b'; select 2

-- ============================================================ unknown and empty
--- write reason=Unknown
frobnicate the database
--- write reason=Unknown
START
--- write reason=Unknown
EXPLAIN
--- write reason=Unknown
(
--- write reason=Unknown
42
--- write reason=Unknown
-- nothing but a comment
--- write reason=Unknown
EXPLAIN SHOW search_path

-- ============================================================ Django (psycopg)
--- read reason=Read
SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."first_name", "auth_user"."last_name", "auth_user"."email", "auth_user"."is_staff", "auth_user"."is_active", "auth_user"."date_joined" FROM "auth_user" WHERE "auth_user"."id" = 1 LIMIT 21
--- read reason=Read
SELECT "django_session"."session_key", "django_session"."session_data", "django_session"."expire_date" FROM "django_session" WHERE ("django_session"."expire_date" > '2024-05-01T10:00:00.123456+00:00'::timestamptz AND "django_session"."session_key" = 'q2v7c8x1m0') LIMIT 21
--- read reason=Read
SELECT COUNT(*) AS "__count" FROM "blog_post" WHERE "blog_post"."published" IS NOT NULL
--- read reason=Read
SELECT 1 AS "a" FROM "blog_post" WHERE "blog_post"."slug" = 'hello-world' LIMIT 1
--- read reason=Read
SELECT "blog_post"."id", "blog_post"."title", "blog_author"."id", "blog_author"."name" FROM "blog_post" INNER JOIN "blog_author" ON ("blog_post"."author_id" = "blog_author"."id") WHERE "blog_post"."published" <= '2024-05-01T10:00:00+00:00'::timestamptz ORDER BY "blog_post"."published" DESC LIMIT 10 OFFSET 20
--- read reason=Read
SELECT "blog_comment"."id", "blog_comment"."post_id", "blog_comment"."body" FROM "blog_comment" WHERE "blog_comment"."post_id" IN (1, 2, 3, 4, 5)
--- read reason=Read
SELECT "shop_item"."id", "shop_item"."data" FROM "shop_item" WHERE ("shop_item"."data" -> 'color') = '"red"'::jsonb
--- read reason=Read
SELECT "shop_item"."id" FROM "shop_item" WHERE "shop_item"."data" @> '{"tags": ["sale"]}'::jsonb
--- read reason=Read
SELECT DISTINCT ON ("shop_order"."customer_id") "shop_order"."id", "shop_order"."customer_id" FROM "shop_order" ORDER BY "shop_order"."customer_id" ASC, "shop_order"."created" DESC
--- read reason=Read
SELECT EXTRACT(YEAR FROM "blog_post"."published" AT TIME ZONE 'UTC') AS "year", COUNT("blog_post"."id") AS "n" FROM "blog_post" GROUP BY 1 ORDER BY 1
--- read reason=Read
SELECT "blog_post"."id", EXISTS(SELECT 1 AS "a" FROM "blog_like" U0 WHERE (U0."post_id" = ("blog_post"."id") AND U0."user_id" = 7) LIMIT 1) AS "liked" FROM "blog_post"
--- read reason=Read
SELECT "blog_post"."id", ROW_NUMBER() OVER (PARTITION BY "blog_post"."author_id" ORDER BY "blog_post"."published" DESC) AS "rn" FROM "blog_post"
--- read reason=Read
SELECT "auth_user"."id" FROM "auth_user" WHERE UPPER("auth_user"."email"::text) LIKE UPPER('%example.com')
--- read reason=Read
SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)
--- read reason=Read
SELECT "django_migrations"."id", "django_migrations"."app", "django_migrations"."name", "django_migrations"."applied" FROM "django_migrations"
--- write reason=Write
INSERT INTO "blog_post" ("title", "body", "author_id", "published") VALUES ('Hello', 'Body; with semicolon', 3, NULL) RETURNING "blog_post"."id"
--- write reason=Write
INSERT INTO "blog_tag" ("name") VALUES ('a'), ('b'), ('c') ON CONFLICT DO NOTHING RETURNING "blog_tag"."id"
--- write reason=Write
UPDATE "blog_post" SET "views" = ("blog_post"."views" + 1) WHERE "blog_post"."id" = 5
--- write reason=Write
DELETE FROM "django_session" WHERE "django_session"."expire_date" < '2024-05-01T10:00:00+00:00'::timestamptz
--- write reason=Locking
SELECT "shop_stock"."id", "shop_stock"."qty" FROM "shop_stock" WHERE "shop_stock"."sku" = 'X-1' FOR UPDATE
--- write reason=Locking
SELECT "shop_stock"."id" FROM "shop_stock" WHERE "shop_stock"."qty" > 0 FOR UPDATE SKIP LOCKED
--- write reason=Locking
SELECT "shop_stock"."id" FROM "shop_stock" INNER JOIN "shop_item" ON ("shop_stock"."item_id" = "shop_item"."id") FOR NO KEY UPDATE OF "shop_stock"
--- write reason=Locking
SELECT "shop_stock"."id" FROM "shop_stock" WHERE "shop_stock"."id" = 9 FOR UPDATE NOWAIT
--- write reason=Transaction txn=Savepoint
SAVEPOINT "s140245229_x1"
--- write reason=Transaction txn=ReleaseSavepoint
RELEASE SAVEPOINT "s140245229_x1"
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TO SAVEPOINT "s140245229_x1"
--- write reason=WriteFunction
SELECT setval(pg_get_serial_sequence('"blog_post"','id'), coalesce(max("id"), 1), max("id") IS NOT null) FROM "blog_post"
--- write reason=Write
CREATE TABLE "django_migrations" ("id" bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, "applied" timestamp with time zone NOT NULL)
--- write reason=Write
SET TIME ZONE 'UTC'

-- ============================================================ Rails / ActiveRecord
--- read reason=Read
SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2
--- read reason=Read
SELECT 1 AS one FROM "users" WHERE "users"."email" = $1 LIMIT $2
--- read reason=Read
SELECT "posts".* FROM "posts" INNER JOIN "taggings" ON "taggings"."post_id" = "posts"."id" WHERE "taggings"."tag_id" = $1 ORDER BY "posts"."created_at" DESC LIMIT $2 OFFSET $3
--- read reason=Read
SELECT COUNT(*) FROM "comments" WHERE "comments"."post_id" = $1 AND "comments"."deleted_at" IS NULL
--- read reason=Read
SELECT "users"."id", "users"."email" FROM "users" WHERE "users"."account_id" IN ($1, $2, $3)
--- read reason=Read
SELECT "posts".* FROM "posts" WHERE "posts"."author_id" = $1 /*application:Blog,controller:posts,action:index*/
--- read reason=Read
/*action='show',application='Blog',controller='posts'*/ SELECT "posts".* FROM "posts" WHERE "posts"."id" = $1 LIMIT $2
--- read reason=Read
SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC
--- read reason=Read
SELECT "ar_internal_metadata"."value" FROM "ar_internal_metadata" WHERE "ar_internal_metadata"."key" = $1 ORDER BY "ar_internal_metadata"."key" ASC LIMIT $2
--- read reason=Read
SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull, a.atttypid, a.atttypmod, c.collname, col_description(a.attrelid, a.attnum) AS comment, attgenerated as attgenerated FROM pg_attribute a LEFT JOIN pg_attrdef d ON a.attrelid = d.adrelid AND a.attnum = d.adnum LEFT JOIN pg_type t ON a.atttypid = t.oid LEFT JOIN pg_collation c ON a.attcollation = c.oid AND a.attcollation <> t.typcollation WHERE a.attrelid = '"users"'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
--- read reason=Read
SELECT t.oid, t.typname, t.typelem, t.typdelim, t.typinput, r.rngsubtype, t.typtype, t.typbasetype FROM pg_type as t LEFT JOIN pg_range as r ON oid = rngtypid WHERE t.typname IN ('int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'numeric', 'bool', 'timestamp', 'timestamptz')
--- read reason=Read
SELECT "orders"."status", SUM("orders"."total") AS "sum_total" FROM "orders" WHERE "orders"."created_at" BETWEEN $1 AND $2 GROUP BY "orders"."status"
--- read reason=Read
SELECT "users".* FROM "users" WHERE ("users"."name" ILIKE $1) ORDER BY "users"."id" ASC LIMIT $2
--- read reason=Read
SHOW search_path
--- write reason=Write
INSERT INTO "users" ("email", "created_at", "updated_at") VALUES ($1, $2, $3) RETURNING "id"
--- write reason=Write
UPDATE "users" SET "sign_in_count" = $1, "updated_at" = $2 WHERE "users"."id" = $3
--- write reason=Write
UPDATE "posts" SET "comments_count" = COALESCE("comments_count", 0) + $1 WHERE "posts"."id" = $2
--- write reason=Write
DELETE FROM "sessions" WHERE "sessions"."id" = $1
--- write reason=Write
INSERT INTO "tags" ("name","created_at","updated_at") VALUES ('a', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), ('b', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) ON CONFLICT ("name") DO UPDATE SET "updated_at"=(CASE WHEN ("tags"."name" IS NOT DISTINCT FROM excluded."name") THEN "tags".updated_at ELSE CURRENT_TIMESTAMP END) RETURNING "id"
--- write reason=Locking
SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2 FOR UPDATE
--- write reason=Locking
SELECT "solid_queue_ready_executions".* FROM "solid_queue_ready_executions" WHERE "solid_queue_ready_executions"."queue_name" = $1 ORDER BY "solid_queue_ready_executions"."priority" ASC, "solid_queue_ready_executions"."job_id" ASC LIMIT $2 FOR UPDATE SKIP LOCKED
--- write reason=WriteFunction
SELECT pg_try_advisory_lock(3078563285472373234)
--- write reason=WriteFunction
SELECT pg_advisory_unlock(3078563285472373234)
--- write reason=WriteFunction
WITH rows AS MATERIALIZED (SELECT "good_jobs"."id", "good_jobs"."active_job_id" FROM "good_jobs" WHERE "good_jobs"."finished_at" IS NULL ORDER BY priority DESC NULLS LAST, created_at ASC LIMIT 2) SELECT "good_jobs".* FROM "good_jobs" WHERE "good_jobs"."id" IN (SELECT "id" FROM "rows" WHERE pg_try_advisory_lock(('x' || substr(md5('good_jobs' || '-' || "rows"."active_job_id"::text), 1, 16))::bit(64)::bigint) LIMIT 1)
--- write reason=Write
SET client_min_messages TO 'warning'
--- write reason=Write
SET intervalstyle = iso_8601
--- write reason=Transaction txn=Savepoint
SAVEPOINT active_record_1
--- write reason=Transaction txn=ReleaseSavepoint
RELEASE SAVEPOINT active_record_1
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TO SAVEPOINT active_record_1

-- ============================================================ Hibernate / JPA (pgjdbc)
--- read reason=Read
select u1_0.id,u1_0.email,u1_0.name from users u1_0 where u1_0.id=$1
--- read reason=Read
select user0_.id as id1_0_0_, user0_.email as email2_0_0_, user0_.name as name3_0_0_ from users user0_ where user0_.id=$1
--- read reason=Read
select o1_0.id,o1_0.total,c1_0.id,c1_0.name from orders o1_0 join customers c1_0 on c1_0.id=o1_0.customer_id where o1_0.status=$1 order by o1_0.created_at desc offset $2 rows fetch first $3 rows only
--- read reason=Read
select count(u1_0.id) from users u1_0 where u1_0.active=$1
--- read reason=Read
select u1_0.id from users u1_0 where exists(select 1 from orders o1_0 where o1_0.customer_id=u1_0.id and o1_0.total>$1)
--- read reason=Read
select p1_0.id,p1_0.name from products p1_0 where p1_0.category_id in ($1,$2,$3,$4)
--- read reason=Read
select u1_0.id,r1_0.user_id,r1_1.id,r1_1.name from users u1_0 left join (user_roles r1_0 join roles r1_1 on r1_1.id=r1_0.role_id) on u1_0.id=r1_0.user_id where u1_0.id=$1
--- read reason=Read
select e1_0.id,e1_0.payload from events e1_0 where e1_0.created_at between $1 and $2 and e1_0.type=any($3)
--- write reason=Unknown
select u1_0.id,u1_0.name from users u1_0 where u1_0.name like $1 escape '\'
--- read reason=Read
select o1_0.id,o1_0.created_at,o1_0.currency,o1_0.customer_id,c1_0.id,c1_0.created_at,c1_0.email,c1_0.first_name,c1_0.last_name,c1_0.loyalty_tier,c1_0.phone,c1_0.updated_at,o1_0.discount_total,o1_0.grand_total,o1_0.notes,o1_0.placed_at,o1_0.shipping_address_id,sa1_0.id,sa1_0.city,sa1_0.country_code,sa1_0.line1,sa1_0.line2,sa1_0.postal_code,sa1_0.region,o1_0.status,o1_0.subtotal,o1_0.tax_total,o1_0.updated_at,o1_0.version,l1_0.order_id,l1_0.id,l1_0.product_id,p1_0.id,p1_0.category_id,p1_0.created_at,p1_0.description,p1_0.name,p1_0.price,p1_0.sku,p1_0.updated_at,l1_0.quantity,l1_0.unit_price,s1_0.id,s1_0.carrier,s1_0.delivered_at,s1_0.order_id,s1_0.shipped_at,s1_0.status,s1_0.tracking_number,s1_0.updated_at,ba1_0.id,ba1_0.city,ba1_0.country_code,ba1_0.line1,ba1_0.line2,ba1_0.postal_code,ba1_0.region from orders o1_0 join customers c1_0 on c1_0.id=o1_0.customer_id left join addresses sa1_0 on sa1_0.id=o1_0.shipping_address_id left join shipments s1_0 on s1_0.order_id=o1_0.id left join addresses ba1_0 on ba1_0.id=o1_0.billing_address_id left join order_lines l1_0 on o1_0.id=l1_0.order_id left join products p1_0 on p1_0.id=l1_0.product_id where o1_0.status in ($1,$2,$3) and o1_0.placed_at>=$4 and o1_0.placed_at<$5 and (c1_0.loyalty_tier=$6 or c1_0.loyalty_tier is null) and exists(select 1 from payments p2_0 where p2_0.order_id=o1_0.id and p2_0.state=$7 and p2_0.captured_at is not null) and not exists(select 1 from refunds r1_0 where r1_0.order_id=o1_0.id and r1_0.amount>=o1_0.grand_total) and o1_0.id in (select ot1_0.order_id from order_tags ot1_0 join tags t1_0 on t1_0.id=ot1_0.tag_id where lower(t1_0.name) in ($8,$9,$10,$11)) and coalesce(o1_0.discount_total,0)<=$12 and sa1_0.country_code=any($13) and (s1_0.status is null or s1_0.status not in ($16,$17)) and o1_0.version>=$18 order by o1_0.placed_at desc,o1_0.id desc offset $14 rows fetch first $15 rows only
--- write reason=Locking
select o1_0.id,o1_0.created_at,o1_0.currency,o1_0.customer_id,c1_0.id,c1_0.created_at,c1_0.email,c1_0.first_name,c1_0.last_name,c1_0.loyalty_tier,c1_0.phone,c1_0.updated_at,o1_0.discount_total,o1_0.grand_total,o1_0.notes,o1_0.placed_at,o1_0.shipping_address_id,sa1_0.id,sa1_0.city,sa1_0.country_code,sa1_0.line1,sa1_0.line2,sa1_0.postal_code,sa1_0.region,o1_0.status,o1_0.subtotal,o1_0.tax_total,o1_0.updated_at,o1_0.version,l1_0.order_id,l1_0.id,l1_0.product_id,p1_0.id,p1_0.category_id,p1_0.created_at,p1_0.description,p1_0.name,p1_0.price,p1_0.sku,p1_0.updated_at,l1_0.quantity,l1_0.unit_price,s1_0.id,s1_0.carrier,s1_0.delivered_at,s1_0.order_id,s1_0.shipped_at,s1_0.status,s1_0.tracking_number,s1_0.updated_at,ba1_0.id,ba1_0.city,ba1_0.country_code,ba1_0.line1,ba1_0.line2,ba1_0.postal_code,ba1_0.region from orders o1_0 join customers c1_0 on c1_0.id=o1_0.customer_id left join addresses sa1_0 on sa1_0.id=o1_0.shipping_address_id left join shipments s1_0 on s1_0.order_id=o1_0.id left join addresses ba1_0 on ba1_0.id=o1_0.billing_address_id left join order_lines l1_0 on o1_0.id=l1_0.order_id left join products p1_0 on p1_0.id=l1_0.product_id where o1_0.status in ($1,$2,$3) and o1_0.placed_at>=$4 and o1_0.placed_at<$5 and (c1_0.loyalty_tier=$6 or c1_0.loyalty_tier is null) and exists(select 1 from payments p2_0 where p2_0.order_id=o1_0.id and p2_0.state=$7 and p2_0.captured_at is not null) and not exists(select 1 from refunds r1_0 where r1_0.order_id=o1_0.id and r1_0.amount>=o1_0.grand_total) and o1_0.id in (select ot1_0.order_id from order_tags ot1_0 join tags t1_0 on t1_0.id=ot1_0.tag_id where lower(t1_0.name) in ($8,$9,$10,$11)) and coalesce(o1_0.discount_total,0)<=$12 and sa1_0.country_code=any($13) and (s1_0.status is null or s1_0.status not in ($16,$17)) and o1_0.version>=$18 order by o1_0.placed_at desc,o1_0.id desc for no key update of o1_0
--- write reason=WriteFunction
select nextval('users_seq')
--- write reason=WriteFunction
select nextval('hibernate_sequence')
--- write reason=Write
insert into users (email,name,id) values ($1,$2,$3)
--- write reason=Write
update users set email=$1,name=$2,version=$3 where id=$4 and version=$5
--- write reason=Write
delete from users where id=$1
--- write reason=Write
delete from user_roles where user_id=$1
--- write reason=Locking
select u1_0.id,u1_0.balance from accounts u1_0 where u1_0.id=$1 for no key update
--- write reason=Locking
select u1_0.id from accounts u1_0 where u1_0.id=$1 for share
--- write reason=Locking
select u1_0.id from accounts u1_0 where u1_0.id=$1 for no key update of u1_0 skip locked
--- write reason=Locking
select u1_0.id from accounts u1_0 where u1_0.id=$1 for update nowait
--- write reason=Transaction txn=Begin
BEGIN
--- read reason=Transaction txn=BeginReadOnly
BEGIN READ ONLY
--- write reason=Transaction txn=None
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ
--- read reason=Transaction txn=SetSessionReadOnly
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
--- write reason=Transaction txn=ClearSessionReadOnly
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE
--- write reason=Write
SET application_name = 'PostgreSQL JDBC Driver'
--- write reason=Write
SET extra_float_digits = 3

-- ============================================================ SQLAlchemy (psycopg / asyncpg)
--- read reason=Read
SELECT users.id, users.name, users.fullname FROM users WHERE users.name = 'spongebob'
--- read reason=Read
SELECT users.id AS users_id, users.name AS users_name FROM users WHERE users.id = $1::INTEGER
--- read reason=Read
SELECT anon_1.users_id, anon_1.users_name FROM (SELECT users.id AS users_id, users.name AS users_name FROM users ORDER BY users.id LIMIT $1::INTEGER OFFSET $2::INTEGER) AS anon_1
--- read reason=Read
SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users WHERE users.active IS true) AS anon_1
--- read reason=Read
SELECT addresses.id, addresses.user_id, addresses.email_address FROM addresses WHERE addresses.user_id IN ($1::INTEGER, $2::INTEGER, $3::INTEGER)
--- read reason=Read
SELECT users.id, users.name FROM users WHERE users.id IN ($1::INTEGER, $2::INTEGER)
--- read reason=Read
SELECT users.name, count(addresses.id) AS count_1 FROM users LEFT OUTER JOIN addresses ON users.id = addresses.user_id GROUP BY users.name HAVING count(addresses.id) > $1::INTEGER
--- read reason=Read
SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = $1::VARCHAR AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $7::VARCHAR
--- read reason=Read
select pg_catalog.version()
--- read reason=Read
select current_schema()
--- read reason=Read
show standard_conforming_strings
--- read reason=Read
WITH regional_sales AS (SELECT orders.region AS region, sum(orders.amount) AS total_sales FROM orders GROUP BY orders.region) SELECT regional_sales.region FROM regional_sales WHERE regional_sales.total_sales > $1::NUMERIC
--- read reason=Read
SELECT users.id FROM users WHERE lower(users.email) = lower($1::VARCHAR) AND users.created_at >= $2::TIMESTAMP WITH TIME ZONE
--- write reason=Write
INSERT INTO users (name, fullname) VALUES ($1::VARCHAR, $2::VARCHAR) RETURNING users.id
--- write reason=Write
INSERT INTO users (name, fullname) SELECT p0::VARCHAR, p1::VARCHAR FROM (VALUES ($1, $2, 0), ($3, $4, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1
--- write reason=Write
UPDATE users SET fullname=$1::VARCHAR WHERE users.id = $2::INTEGER
--- write reason=Write
DELETE FROM addresses WHERE addresses.id = $1::INTEGER
--- write reason=Write
INSERT INTO my_table (id, data) VALUES ($1::INTEGER, $2::VARCHAR) ON CONFLICT (id) DO UPDATE SET data = excluded.data
--- write reason=Locking
SELECT users.id, users.name FROM users WHERE users.id = $1::INTEGER FOR UPDATE
--- write reason=Locking
SELECT users.id FROM users WHERE users.id = $1::INTEGER FOR NO KEY UPDATE OF users NOWAIT
--- write reason=Locking
SELECT accounts.id FROM accounts FOR KEY SHARE SKIP LOCKED
--- write reason=WriteFunction
select nextval('user_id_seq')
--- write reason=WriteFunction
SELECT audit.log_event($1::VARCHAR, $2::JSONB) AS log_event_1
--- read reason=Read
SELECT users.id FROM users WHERE users.id = ANY ($1::INTEGER[])
--- write reason=Transaction txn=Savepoint
SAVEPOINT sa_savepoint_1
--- write reason=Transaction txn=RollbackToSavepoint
ROLLBACK TO SAVEPOINT sa_savepoint_1
--- write reason=Transaction txn=ReleaseSavepoint
RELEASE SAVEPOINT sa_savepoint_1

-- ============================================================ Prisma
--- read reason=Read
SELECT "public"."User"."id", "public"."User"."email", "public"."User"."name" FROM "public"."User" WHERE "public"."User"."id" = $1 LIMIT $2 OFFSET $3
--- read reason=Read
SELECT "public"."Post"."id", "public"."Post"."title", "public"."Post"."authorId" FROM "public"."Post" WHERE "public"."Post"."authorId" IN ($1,$2,$3) OFFSET $4
--- read reason=Read
SELECT COUNT(*) AS "_count._all" FROM (SELECT "public"."Post"."id" FROM "public"."Post" WHERE "public"."Post"."published" = $1 OFFSET $2) AS "sub"
--- read reason=Read
SELECT "public"."User"."id", "public"."User"."email" FROM "public"."User" WHERE ("public"."User"."email" LIKE $1 AND "public"."User"."role" = CAST($2::text AS "public"."Role")) ORDER BY "public"."User"."createdAt" DESC LIMIT $3 OFFSET $4
--- read reason=Read
SELECT "t1"."id", COALESCE("aggr_selection_0_Post"."_aggr_count_posts", 0) AS "_aggr_count_posts" FROM "public"."User" AS "t1" LEFT JOIN (SELECT "public"."Post"."authorId", COUNT(*) AS "_aggr_count_posts" FROM "public"."Post" WHERE 1=1 GROUP BY "public"."Post"."authorId") AS "aggr_selection_0_Post" ON ("t1"."id" = "aggr_selection_0_Post"."authorId") WHERE 1=1 OFFSET $1
--- read reason=Read
SELECT "public"."Profile"."id", "public"."Profile"."bio" FROM "public"."Profile" WHERE ("public"."Profile"."userId" = $1 AND 1=1) LIMIT $2 OFFSET $3
--- read reason=Read
SELECT "public"."Post"."id", "public"."Post"."tags" FROM "public"."Post" WHERE "public"."Post"."tags" @> $1 OFFSET $2
--- read reason=Read
SELECT "public"."User"."id" FROM "public"."User" WHERE ("public"."User"."id") IN (SELECT "t1"."authorId" FROM "public"."Post" AS "t1" WHERE ("t1"."published" = $1 AND "t1"."authorId" IS NOT NULL)) OFFSET $2
--- read reason=Read
SELECT "public"."_prisma_migrations"."id", "public"."_prisma_migrations"."checksum" FROM "public"."_prisma_migrations" ORDER BY "public"."_prisma_migrations"."started_at" ASC
--- read reason=Read
SELECT 1
--- read reason=Read
SELECT "public"."Post"."id", "public"."Post"."title" FROM "public"."Post" WHERE ("public"."Post"."title" ILIKE $1 OR "public"."Post"."content" ILIKE $2) ORDER BY "public"."Post"."id" ASC LIMIT $3 OFFSET $4
--- write reason=Write
INSERT INTO "public"."User" ("email","name","createdAt") VALUES ($1,$2,$3) RETURNING "public"."User"."id", "public"."User"."email", "public"."User"."name", "public"."User"."createdAt"
--- write reason=Write
UPDATE "public"."Post" SET "published" = $1, "updatedAt" = $2 WHERE ("public"."Post"."id" = $3 AND 1=1) RETURNING "public"."Post"."id"
--- write reason=Write
DELETE FROM "public"."Post" WHERE ("public"."Post"."id" IN ($1) AND 1=1) RETURNING "public"."Post"."id"
--- write reason=Write
INSERT INTO "public"."Tag" ("name") VALUES ($1), ($2) ON CONFLICT DO NOTHING
--- write reason=Write
INSERT INTO "public"."User" ("id","email") VALUES ($1,$2) ON CONFLICT ("email") DO UPDATE SET "name" = $3 WHERE ("public"."User"."email" = $4 AND 1=1) RETURNING "public"."User"."id"
--- write reason=Write
UPDATE "public"."User" SET "loginCount" = ("public"."User"."loginCount" + $1) WHERE ("public"."User"."id" = $2 AND 1=1)
--- write reason=Transaction txn=Begin
BEGIN
--- write reason=Transaction txn=End
COMMIT
--- write reason=Transaction txn=End
ROLLBACK
--- write reason=Transaction txn=BeginPrimary
BEGIN ISOLATION LEVEL SERIALIZABLE
--- write reason=Transaction txn=SetTransaction
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE
--- write reason=WriteFunction
SELECT pg_advisory_lock(72707369)
--- write reason=WriteFunction
SELECT pg_advisory_unlock(72707369)
--- write reason=Write
CREATE TABLE "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ, "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ, "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0)
