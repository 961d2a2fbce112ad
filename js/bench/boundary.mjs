// Cost of the JS host per operation and per round against the in-memory
// backend (so no network): what the wasm boundary plus the rules cost a
// Node process, in CPU time. Run after js/build.sh:  node js/bench/boundary.mjs [iterations] [--json]
// (--json: one line of ns per operation, for bench/run).

import { Sessions, memoryExecutor, packReplies } from '../lib/node.js';

const json = process.argv.includes('--json');
const n = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 20000);
const results = {};
let now = 1_700_000_000_000;
let rounds = 0;
const mem = memoryExecutor(undefined, () => now);
const executor = (round) => {
  rounds += 1;
  return mem(round);
};
const sessions = new Sessions({ executor, clock: () => now });

const s = (await sessions.load(null)).session;
s.set('cart', { items: ['apple', 'pear'], total: 2 });
s.set('user', { name: 'alice', roles: ['admin'] });
const cookie = (await sessions.save(s)).cookie.split(';')[0];

async function measure(name, body) {
  for (let i = 0; i < Math.min(n, 1000); i++) await body(i); // warm up
  rounds = 0;
  // CPU time, not wall time: on a busy machine (CI, parallel builds) wall
  // time counts the waits for a core; the work per op is the CPU it takes.
  const start = process.cpuUsage();
  for (let i = 0; i < n; i++) await body(i);
  const used = process.cpuUsage(start);
  const ns = (used.user + used.system) * 1000;
  const perOp = ns / n / 1000;
  results[name] = ns / n;
  if (json) return;
  console.log(
    `${name.padEnd(22)} ${Math.round(n / (ns / 1e9)).toString().padStart(7)} ops/s  ${perOp.toFixed(1)} µs/op  ` +
      `${(ns / rounds / 1000).toFixed(1)} µs/round (${(rounds / n).toFixed(1)} rounds/op)`,
  );
}

await measure('load (read only)', async () => {
  const o = await sessions.load(cookie);
  o.session.free();
});
await measure('load + set + save', async (i) => {
  const o = await sessions.load(cookie);
  o.session.set('counter', i);
  const saved = await sessions.save(o.session);
  o.session.free();
  saved.session.free();
});

// The same load with its replies captured once and replayed: the rules plus
// the boundary crossings, no backend work (what a Redis host pays
// in-process). Packed: the round out and the replies in as one buffer each
// (what runOp does); per element: the JS-object form (`op.next`), kept for
// the conformance runner, measured alongside so the saving shows in one run.
const engine = sessions.engine;
const probe = engine.load(cookie, null, now);
const recorded = mem.memory.executeRound(probe.next().round, now);
probe.free();
await measure('load, replayed replies', async () => {
  const op = engine.load(cookie, null, now);
  rounds += 1;
  op.step();
  JSON.parse(op.step(packReplies(recorded)));
  op.takeSession().free();
  op.free();
});
await measure('  same, per element', async () => {
  const op = engine.load(cookie, null, now);
  rounds += 1;
  op.next();
  const step = op.next(recorded);
  step.outcome.session.free();
  op.free();
});

if (json) {
  console.log(JSON.stringify({ loadNs: results['load (read only)'], loadSaveNs: results['load + set + save'], loadReplayedNs: results['load, replayed replies'], loadReplayedPerElementNs: results['  same, per element'], iterations: n }));
}
