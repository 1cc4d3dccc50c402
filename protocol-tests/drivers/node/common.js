// Shared by the node-postgres workloads: where to connect, checking results, reporting.
// Settings come from the environment (set by protocol-tests/drivers.rs): PGMUX_HOST,
// PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB; PGMUX_EXPECT_SPREAD=1 also checks that
// some client's statements ran on more than one server connection (transaction mode).
'use strict';

const config = {
  host: process.env.PGMUX_HOST || '127.0.0.1',
  port: Number(process.env.PGMUX_PORT || 6432),
  user: process.env.PGMUX_USER || 'app',
  password: process.env.PGMUX_PASSWORD || 'app',
  database: process.env.PGMUX_DB || 'app',
  ssl: false,
  connectionTimeoutMillis: 10000,
};
const expectSpread = process.env.PGMUX_EXPECT_SPREAD === '1';

class WrongResult extends Error {}

function expect(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new WrongResult(`${what}: got ${g}, expected ${w}`);
}

class Report {
  constructor(driver) {
    this.driver = driver;
    this.queries = 0;
    this.failures = [];
    this.pids = new Map();
  }
  count(n = 1) { this.queries += n; }
  sawPid(client, pid) {
    if (!this.pids.has(client)) this.pids.set(client, new Set());
    this.pids.get(client).add(pid);
  }
  failed(where, err) {
    this.failures.push(`${where}: ${err && err.stack ? err.stack : err}` +
      (err && err.code ? ` (SQLSTATE ${err.code})` : ''));
  }
  spread() {
    const counts = [...this.pids.values()].map((s) => s.size);
    if (counts.length === 0) return [0, 0];
    return [Math.min(...counts), Math.max(...counts)];
  }
  finish(summary) {
    const [lo, hi] = this.spread();
    if (this.failures.length === 0 && expectSpread && hi < 2) {
      this.failures.push(`no client saw more than one server connection (backends per client ${lo}..${hi}): ` +
        'the workload did not exercise statement reuse across server connections');
    }
    if (this.failures.length > 0) {
      for (const f of this.failures.slice(0, 10)) console.error(`${this.driver}: FAIL: ${f}`);
      if (this.failures.length > 10) console.error(`${this.driver}: ... and ${this.failures.length - 10} more failures`);
      const first = this.failures[0].split('\n')[0];
      console.log(`${this.driver}: FAILED (${this.failures.length} failures, ${this.queries} queries ok); first: ${first}`);
      process.exit(1);
    }
    console.log(`${summary}; backends per client ${lo}..${hi}`);
    process.exit(0);
  }
}

// Rejects after ms: the whole workload is bounded in time.
function deadline(ms, what) {
  return new Promise((_, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: still running after ${ms / 1000} s`)), ms);
    t.unref();
  });
}

const pgVersion = require('pg/package.json').version;

module.exports = { config, expect, Report, deadline, pgVersion, WrongResult };
