// Two (here four) clients use the SAME statement name for DIFFERENT SQL at the same time,
// through pgmux: each must get the results of its own SQL. node-postgres named queries
// make this easy: client k's "drv_shared" is its own query, with its own result columns
// and types; "drv_shared_2" returns an int on some clients and text on others.
'use strict';

const { Client } = require('pg');
const { config, expect, Report, deadline, pgVersion } = require('./common');

const CLIENTS = 4;
const ITERATIONS = 60;
const report = new Report('node-postgres same-name');

function shared(k, i) {
  return {
    q: {
      name: 'drv_shared',
      text: `select $1::int4 * ${k + 2} as v${k}, 'client ${k}'::text as who, pg_backend_pid() as pid`,
      values: [i],
    },
    check: (row, label) => {
      expect(row.who, `client ${k}`, `${label}: drv_shared: whose statement ran`);
      expect(row[`v${k}`], i * (k + 2), `${label}: drv_shared value`);
    },
  };
}

function shared2(k, i) {
  const text = k % 2 === 0
    ? `select $1::int4 + ${k} as x, pg_backend_pid() as pid`
    : `select 'k${k}:' || $1::text as x, pg_backend_pid() as pid`;
  return {
    q: { name: 'drv_shared_2', text, values: [i] },
    check: (row, label) => expect(row.x, k % 2 === 0 ? i + k : `k${k}:${i}`, `${label}: drv_shared_2`),
  };
}

async function run(client, k, label, make, i) {
  const { q, check } = make(k, i);
  const res = await client.query(q);
  expect(res.rows.length, 1, `${label}: rows of ${q.name}`);
  check(res.rows[0], label);
  report.sawPid(k, res.rows[0].pid);
  report.count();
}

async function clientLoop(k) {
  const client = new Client({ ...config, application_name: `drv_same_${k}` });
  await client.connect();
  try {
    // Half the clients prepare drv_shared first, the others drv_shared_2 first.
    const order = k % 2 === 0 ? [shared, shared2] : [shared2, shared];
    for (let i = 0; i < ITERATIONS; i++) {
      const label = `client ${k} iteration ${i}`;
      if (i % 3 === 0) {
        await client.query('BEGIN');
        for (const m of order) await run(client, k, `${label} (in transaction)`, m, i);
        await client.query('COMMIT');
      } else {
        for (const m of order) await run(client, k, label, m, i);
      }
    }
  } finally {
    await client.end();
  }
}

async function main() {
  const results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, k) => clientLoop(k)));
  results.forEach((r, k) => { if (r.status === 'rejected') report.failed(`client ${k}`, r.reason); });
}

Promise.race([main(), deadline(120000, 'same-name workload')])
  .catch((e) => report.failed('main', e))
  .then(() => report.finish(
    `node-postgres ${pgVersion} same statement name, different SQL: ${report.queries} queries ok; ` +
    `${CLIENTS} concurrent clients x ${ITERATIONS} iterations, names drv_shared and drv_shared_2`,
  ));
