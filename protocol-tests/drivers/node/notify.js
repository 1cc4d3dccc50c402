// node-postgres LISTEN/NOTIFY through pgmux in transaction mode (protocol-tests/notify.rs):
// several clients with client.on('notification') on a pool of 2, running queries
// meanwhile; every notification once, in order.
const { Client } = require('pg');
const { config } = require('./common');

const LISTENERS = 6;
const COUNT = 200;

async function main() {
  const clients = [];
  const got = [];
  for (let i = 0; i < LISTENERS; i++) {
    const c = new Client(config);
    await c.connect();
    got.push([]);
    c.on('notification', (m) => got[i].push(`${m.channel}:${m.payload}`));
    await c.query('LISTEN node_chan');
    clients.push(c);
  }
  const sender = new Client(config);
  await sender.connect();
  const busy = clients.map(async (c) => {
    for (let k = 0; k < 20; k++) {
      await c.query('BEGIN');
      const r = await c.query('select $1::int + 1 as n', [k]);
      if (r.rows[0].n !== k + 1) throw new Error('wrong result');
      await c.query('COMMIT');
    }
  });
  for (let k = 0; k < COUNT; k++) await sender.query(`NOTIFY node_chan, '${k}'`);
  await Promise.all(busy);
  const deadline = Date.now() + 30000;
  while (got.some((g) => g.length < COUNT) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  const want = Array.from({ length: COUNT }, (_, k) => `node_chan:${k}`);
  const fails = got
    .map((g, i) => (JSON.stringify(g) === JSON.stringify(want) ? null : `listener ${i}: got ${g.length} of ${COUNT}`))
    .filter(Boolean);
  for (const c of [...clients, sender]) await c.end();
  if (fails.length) {
    for (const f of fails) console.error('FAIL:', f);
    process.exit(1);
  }
  console.log(`node-postgres ${require('pg/package.json').version}: ${LISTENERS} clients received ${COUNT} notifications each, once and in order, with transactions running on them`);
}

main().catch((e) => {
  console.error('FAIL:', e.stack || e);
  process.exit(1);
});
