// node-postgres (pg) named queries ({name, text, values}) through pgmux: pg prepares a
// named query once per connection (Parse with that name) and afterwards sends only
// Bind/Execute, expecting the statement to still be there. Several pool clients run
// them in explicit transactions and outside them, writes (INSERT with parameters, named
// and unnamed) too; every result is checked and every row read back on the primary.
'use strict';

const { Pool } = require('pg');
const { config, expect, Report, deadline, pgVersion } = require('./common');

const POOL_MAX = 6;
const WORKERS = 6;
const ITERATIONS = 40;
const TABLE = 'drv_node';

const report = new Report('node-postgres');
let nextClientId = 0;

const Q = {
  add: (w, i) => ({
    q: { name: 'drv_add', text: 'select $1::int4 + $2::int4 as v, pg_backend_pid() as pid', values: [w * 1000, i] },
    want: w * 1000 + i,
  }),
  concat: (w, i) => ({
    q: { name: 'drv_concat', text: "select $1::text || '#' || $2::text as v, pg_backend_pid() as pid", values: [`w${w}`, `${i}`] },
    want: `w${w}#${i}`,
  }),
  series: (w, i) => ({
    q: { name: 'drv_series', text: 'select count(*)::int4 as v, pg_backend_pid() as pid from generate_series(1, $1::int4)', values: [(w + i) % 30 + 1] },
    want: (w + i) % 30 + 1,
  }),
  bool: (w, i) => ({
    q: { name: 'drv_bool', text: 'select ($1::int4 % 2 = 0) as v, pg_backend_pid() as pid', values: [i] },
    want: i % 2 === 0,
  }),
};
const ORDER = Object.keys(Q);

async function named(client, label, make, w, i) {
  const { q, want } = make(w, i);
  const res = await client.query(q);
  expect(res.rows.length, 1, `${label}: rows of ${q.name}`);
  expect(res.rows[0].v, want, `${label}: ${q.name} ${JSON.stringify(q.values)}`);
  report.sawPid(client.drvId, res.rows[0].pid);
  report.count();
}

async function worker(pool, w) {
  const order = ORDER.slice(w % ORDER.length).concat(ORDER.slice(0, w % ORDER.length));
  for (let i = 0; i < ITERATIONS; i++) {
    const label = `worker ${w} iteration ${i}`;
    const client = await pool.connect();
    if (client.drvId === undefined) client.drvId = nextClientId++;
    let broken = null;
    try {
      await client.query('BEGIN');
      for (const k of order) await named(client, `${label} (in transaction)`, Q[k], w, i);
      const ins = await client.query({
        name: 'drv_insert',
        text: `insert into ${TABLE} (worker, i, how) values ($1, $2, 'transaction') returning worker * 1000 + i as v`,
        values: [w, i],
      });
      expect(ins.rows[0].v, w * 1000 + i, `${label}: insert returning`);
      report.count();
      await client.query('COMMIT');
      // Outside a transaction: each named query its own implicit transaction.
      for (const k of order.slice().reverse()) await named(client, `${label} (autocommit)`, Q[k], w, i + 1);
      // Writes outside a transaction: a named INSERT and an unnamed one (text + values).
      const auto = await client.query({
        name: 'drv_insert_auto',
        text: `insert into ${TABLE} (worker, i, how) values ($1, $2, 'named autocommit')`,
        values: [w, i],
      });
      expect(auto.rowCount, 1, `${label}: named insert outside a transaction`);
      const unnamed = await client.query(`insert into ${TABLE} (worker, i, how) values ($1, $2, $3) returning i`, [w, i, 'unnamed autocommit']);
      expect(unnamed.rows[0].i, i, `${label}: unnamed insert returning outside a transaction`);
      report.count(2);
    } catch (e) {
      broken = e;
      throw e;
    } finally {
      client.release(broken || undefined);
    }
  }
}

async function main() {
  const pool = new Pool({ ...config, max: POOL_MAX, application_name: 'drv_node' });
  try {
    await pool.query(`drop table if exists ${TABLE}`);
    await pool.query(`create table ${TABLE} (worker int not null, i int not null, how text not null)`);
    const results = await Promise.allSettled(Array.from({ length: WORKERS }, (_, w) => worker(pool, w)));
    results.forEach((r, w) => { if (r.status === 'rejected') report.failed(`worker ${w}`, r.reason); });
    if (report.failures.length === 0) {
      // Read on the primary: a replica may not have replayed the last writes yet.
      const res = await pool.query({
        name: 'drv_count',
        text: `/* pgmux:primary */ select how, count(*)::int4 as n, coalesce(sum(i), 0)::int4 as s from ${TABLE} group by how order by how`,
      });
      const perWorker = (ITERATIONS * (ITERATIONS - 1)) / 2;
      const want = ['named autocommit', 'transaction', 'unnamed autocommit'].map((how) => [how, WORKERS * ITERATIONS, WORKERS * perWorker]);
      expect(res.rows.map((r) => [r.how, r.n, r.s]), want, 'committed rows on the primary [how, count, sum]');
      report.count();
    }
  } finally {
    await pool.end();
  }
}

Promise.race([main(), deadline(240000, 'node-postgres workload')])
  .catch((e) => report.failed('main', e))
  .then(() => report.finish(
    `node-postgres ${pgVersion}: ${report.queries} queries ok; named queries {name, text, values}: ` +
    `${WORKERS} workers x ${ITERATIONS} iterations on a pg.Pool of ${POOL_MAX}, in transactions and autocommit, ` +
    'INSERTs with parameters outside transactions (named and unnamed)',
  ));
