// The benchmark driver behind `bench/run` (read that first): starts its own
// redis-server, runs every contender's app for a fixed, bounded time under
// wrk, reads Redis's own counters around each run, and writes
// BENCHMARKS.md. Ratios are only ever taken between figures of this run.
//
// Cores: the app under test runs on core 0; redis-server and wrk share
// core 1 (taskset), identically for every contender.
//
// Interleaving: all contenders of a table are up at once, each with its
// own redis-server; per request kind they are measured in rounds
// (A B C D, A B C D, ...), so a noisy second costs one round of every
// contender instead of deciding a ratio.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync, readlinkSync, realpathSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir, cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const args = new Set(argv);
const QUICK = args.has('--quick');
// `--only express,axum,growth,rules`: run those parts and print their
// figures as JSON instead of writing BENCHMARKS.md (for working on one part).
const ONLY = argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
const wanted = (part) => !ONLY || ONLY.includes(part);
for (const a of argv) {
  if (a !== '--quick' && !a.startsWith('--only=')) {
    console.error(`unknown argument ${a}; usage: bench/run [--quick] [--only=express,axum,growth,rules]`);
    process.exit(2);
  }
}
const CFG = {
  connections: 16,
  warmupSeconds: 1,
  // Rounds per request kind; each round is one measured run per contender.
  rounds: QUICK ? 3 : 5,
  seconds: QUICK ? 1 : 2,
  growthRounds: QUICK ? 2 : 3,
  probeSeconds: 1,
  pool: 1000,
  growth: QUICK ? [1e3, 1e4] : [1e3, 1e5, 1e6],
  logoutSizes: [1, 100, 1000],
  logoutReps: QUICK ? 2 : 5,
};
const APP_CORE = '0';
const LOAD_CORE = '1';
const AXUM_BIN = process.env.BENCH_AXUM_BIN ?? path.join(ROOT, 'target/bench/release/bench-axum');
// utime and stime in /proc/<pid>/stat count clock ticks of 1/CLK_TCK s.
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
/** Measured runs that completed no request and were run again (reported). */
const stalls = [];
const tmp = mkdtempSync(path.join(tmpdir(), 'sl-bench-'));
const children = new Set();

const log = (...a) => console.error('[bench]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

function stop(proc) {
  return new Promise((resolve) => {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 2000).unref();
  });
}

function cleanup() {
  for (const p of children) p.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// ---- Redis ----------------------------------------------------------------

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmp, 'redis-'));
  const proc = track(spawn('taskset', ['-c', LOAD_CORE, 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' }));
  for (let i = 0; i < 250; i++) {
    if (await new Promise((r) => connect(port, '127.0.0.1', function () { this.end(); r(true); }).on('error', () => r(false)))) break;
    await sleep(20);
  }
  return { port, proc };
}

const cli = (port, ...argv) => execFileSync('redis-cli', ['-p', String(port), ...argv], { encoding: 'utf8', maxBuffer: 64 << 20 });

/** The counters a run is judged by: commands (incl. inside scripts), read events, CPU. */
function snapshot(port) {
  const text = cli(port, 'INFO', 'all');
  const calls = {};
  let reads = 0;
  let cpu = 0;
  for (const line of text.split('\r\n')) {
    let m = line.match(/^cmdstat_([^:]+):calls=(\d+)/);
    if (m) calls[m[1]] = Number(m[2]);
    m = line.match(/^total_reads_processed:(\d+)/);
    if (m) reads = Number(m[1]);
    m = line.match(/^used_cpu_(sys|user):([\d.]+)/);
    if (m) cpu += Number(m[2]);
  }
  return { calls, reads, cpu };
}

function delta(a, b) {
  let commands = 0;
  for (const [name, n] of Object.entries(b.calls)) if (name !== 'info') commands += n - (a.calls[name] ?? 0);
  // The second snapshot's own INFO is one read event.
  return { commands, reads: b.reads - a.reads - 1, cpu: b.cpu - a.cpu };
}

/** CPU time the process has used so far (all its threads), in clock ticks: utime + stime. */
function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) is parenthesised and may hold spaces: count from after it.
  // There, index 0 is field 3 (state), so fields 14 and 15 are 11 and 12.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * Commands as clients sent them vs as Redis ran them (scripts' inner calls
 * included), via MONITOR on a socket of our own (redis-cli's block-buffered
 * stdout would lose the tail when it is stopped).
 */
async function monitored(port, body) {
  const sock = connect(port, '127.0.0.1');
  let buf = '';
  sock.setEncoding('latin1');
  sock.on('data', (d) => (buf += d));
  sock.write('MONITOR\r\n');
  while (!buf.startsWith('+OK\r\n')) await sleep(5);
  const result = await body();
  // MONITOR lags the commands slightly: wait for a marker command.
  const marker = `bench-monitor-end-${Date.now()}`;
  cli(port, 'ECHO', marker);
  for (let i = 0; i < 500 && !buf.includes(marker); i++) await sleep(10);
  sock.destroy();
  const lines = buf.split('\r\n').filter((l) => /^\+\d+\.\d+ \[/.test(l) && !/"(INFO|info|ECHO)"/.test(l));
  const lua = lines.filter((l) => / \[\d+ lua\] /.test(l)).length;
  return { result, sent: lines.length - lua, executed: lines.length };
}

// ---- Apps and load --------------------------------------------------------

async function startApp(cmd, argv, env = {}) {
  const proc = track(spawn('taskset', ['-c', APP_CORE, cmd, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start:\n${out}`)), 20_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening (127\.0\.0\.1:\d+)/);
      if (m) {
        clearTimeout(timer);
        // taskset execs the app, so this pid is the app's own (its CPU time
        // is what we read): check it before trusting the figures.
        const exe = readlinkSync(`/proc/${proc.pid}/exe`).replace(/ \(deleted\)$/, '');
        if (exe !== realpathSync(cmd)) reject(new Error(`pid ${proc.pid} runs ${exe}, not ${cmd}`));
        else resolve({ proc, base: `http://${m[1]}` });
      }
    });
    proc.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}:\n${out}`)));
  });
}

/** `n` sessions created over HTTP (POST /seed); returns their cookies. */
async function seed(base, n, query = '') {
  const cookies = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next += 1;
      const r = await fetch(`${base}/seed${query}`, { method: 'POST' });
      const set = r.headers.get('set-cookie');
      if (r.status !== 200 || !set) throw new Error(`seed failed: ${r.status} ${await r.text()}`);
      cookies.push(set.split(';')[0]);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return cookies;
}

function wrk({ base, method, route, mode, cookieFile, seconds, connections }) {
  const script = mode === 'consume' ? 'wrk-signin.lua' : 'wrk.lua';
  const extra = mode === 'consume' ? [method, route, cookieFile] : [method, route, mode, cookieFile ?? ''];
  const out = execFileSync('taskset', ['-c', LOAD_CORE, 'wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', path.join(ROOT, 'bench', script), base + route, '--', ...extra], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.startsWith('{"requests"'));
  if (!line) throw new Error(`no result from wrk:\n${out}`);
  return JSON.parse(line);
}

const CASES = [
  { id: 'visitor', title: 'visitor, no cookie', method: 'GET', route: '/read', mode: 'none' },
  { id: 'read', title: 'read-only, existing session', method: 'GET', route: '/read', mode: 'rotate' },
  { id: 'write', title: 'change one key', method: 'POST', route: '/write', mode: 'rotate' },
  { id: 'signin', title: 'sign-in (regenerate)', method: 'POST', route: '/login', mode: 'consume' },
];

/**
 * One request kind for several running apps (`entries`: { id, redis, app,
 * cookies }), interleaved: a warm-up each, then `rounds` rounds of one
 * measured run per app in order, then a sequential probe each.
 */
async function runInterleaved(entries, c, rounds) {
  const runs = entries.map((e) => {
    const cookieFile = path.join(tmp, `cookies-${e.id}-${c.id}.txt`);
    writeFileSync(cookieFile, e.cookies.join('\n') + '\n');
    return { e, cookieFile, load: { base: e.app.base, method: c.method, route: c.route, mode: c.mode, cookieFile }, measured: [] };
  });
  const reseed = async (x) => {
    if (c.mode === 'consume') writeFileSync(x.cookieFile, (await seed(x.e.app.base, CFG.pool)).join('\n') + '\n');
  };
  for (const x of runs) wrk({ ...x.load, seconds: CFG.warmupSeconds, connections: CFG.connections });
  for (let i = 0; i < rounds; i++) {
    for (const x of runs) {
      const pid = x.e.app.proc.pid;
      let r, appTicks, d;
      for (let attempt = 1; ; attempt++) {
        await reseed(x);
        const before = snapshot(x.e.redis.port);
        const ticks = cpuTicks(pid);
        r = wrk({ ...x.load, seconds: CFG.seconds, connections: CFG.connections });
        appTicks = cpuTicks(pid) - ticks;
        d = delta(before, snapshot(x.e.redis.port));
        if (r.socket_errors || r.non2xx) throw new Error(`${x.e.id} ${c.id}: ${r.socket_errors} socket errors, ${r.non2xx} non-2xx of ${r.requests}`);
        if (r.requests > 0) break;
        // Seen on a VM whose vCPU the host paused for seconds: the app got
        // no CPU at all. Such a run measures nothing; run it again.
        if (attempt === 3) throw new Error(`${x.e.id} ${c.id}: no request completed in ${attempt} runs of ${CFG.seconds} s`);
        stalls.push(`${x.e.id} ${c.id} round ${i + 1}`);
        log(`  ${x.e.id} ${c.id}: no request completed in ${CFG.seconds} s (app CPU ${appTicks} ticks): running it again`);
      }
      x.measured.push({
        requests: r.requests,
        rps: r.requests / (r.duration_us / 1e6),
        p50: r.p50_us / 1000,
        p99: r.p99_us / 1000,
        commands: d.commands,
        cpuUs: (d.cpu * 1e6) / r.requests,
        appTicks,
        appCpuUs: (appTicks * 1e6) / CLK_TCK / r.requests,
      });
    }
  }
  const out = {};
  for (const x of runs) {
    await reseed(x);
    const probe = await monitored(x.e.redis.port, async () => {
      const before = snapshot(x.e.redis.port);
      const r = wrk({ ...x.load, seconds: CFG.probeSeconds, connections: 1 });
      return { r, d: delta(before, snapshot(x.e.redis.port)) };
    });
    const n = probe.result.r.requests;
    const reps = x.measured;
    const sum = (key) => reps.reduce((a, r) => a + r[key], 0);
    const summary = (key) => ({ median: median(reps.map((r) => r[key])), min: Math.min(...reps.map((r) => r[key])), max: Math.max(...reps.map((r) => r[key])) });
    out[x.e.id] = {
      rps: summary('rps'),
      p50: summary('p50'),
      p99: summary('p99'),
      cpuUs: summary('cpuUs'),
      // Clock ticks are 10 ms: summed over the rounds, not per round.
      appCpuUs: (sum('appTicks') * 1e6) / CLK_TCK / sum('requests'),
      commands: sum('commands') / sum('requests'),
      rounds: probe.result.d.reads / n,
      sent: probe.sent / n,
      executed: probe.executed / n,
      perRound: reps,
    };
  }
  return out;
}

/** Every contender of a table up at once, each with its own Redis; the request kinds one after another, interleaved. */
async function runSuite(suite) {
  const results = {};
  const entries = [];
  try {
    for (const contender of suite.contenders) {
      log(`${suite.name}: starting ${contender.name}`);
      const redis = await startRedis();
      const entry = { id: contender.id, redis };
      entries.push(entry);
      entry.app = await startApp(...contender.start(redis.port));
      entry.cookies = await seed(entry.app.base, CFG.pool);
      results[contender.id] = {};
    }
    for (const c of CASES) {
      log(`${suite.name}: ${c.id}, ${CFG.rounds} rounds of ${entries.map((e) => e.id).join(' ')}`);
      const res = await runInterleaved(entries, c, CFG.rounds);
      for (const e of entries) {
        const x = (results[e.id][c.id] = res[e.id]);
        log(`  ${e.id}: ${x.rps.median.toFixed(0)} req/s (${x.rps.min.toFixed(0)}–${x.rps.max.toFixed(0)}), app CPU ${x.appCpuUs.toFixed(1)} µs/req, Redis CPU ${x.cpuUs.median.toFixed(1)} µs/req, p50 ${x.p50.median.toFixed(2)} ms, ${x.sent.toFixed(2)} cmds sent, ${x.rounds.toFixed(2)} round trips`);
      }
    }
  } finally {
    for (const e of entries) {
      await stop(e.app?.proc);
      await stop(e.redis.proc);
    }
  }
  return results;
}

const node = (mode) => (port) => [process.execPath, [path.join(ROOT, 'js/bench/express-app.mjs'), '--mode', mode, '--redis-port', String(port), '--port', '0']];
const axum = (mode) => (port) => [AXUM_BIN, ['--mode', mode, '--redis-port', String(port), '--listen', '127.0.0.1:0']];

const SUITES = [
  {
    name: 'Express 5 (node-redis)',
    key: 'express',
    // The app-CPU ratio line: ours ÷ this contender, read-only (issue 12: ≤ 0.75×).
    cpuPeer: 'express-session',
    cpuTarget: 0.75,
    contenders: [
      { id: 'ours', name: 'session-logic middleware', start: node('ours') },
      { id: 'express-session', name: 'express-session + connect-redis', start: node('express-session') },
      { id: 'es-store', name: 'express-session + SessionLogicStore', start: node('es-store') },
      { id: 'floor', name: 'floor: one raw Redis round trip', start: node('floor') },
    ],
  },
  {
    name: 'axum',
    key: 'axum',
    cpuPeer: 'tower',
    contenders: [
      { id: 'ours', name: 'session-logic layer', start: axum('ours') },
      { id: 'tower', name: 'tower-sessions + RedisStore (defaults)', start: axum('tower') },
      { id: 'tower-always', name: 'tower-sessions + RedisStore, with_always_save(true)', start: axum('tower-always') },
      { id: 'floor', name: 'floor: one raw Redis round trip', start: axum('floor') },
    ],
  },
];

// ---- Rules alone ----------------------------------------------------------

function criterionNs(id) {
  const file = path.join(ROOT, 'target/criterion', id, 'new/estimates.json');
  return JSON.parse(readFileSync(file, 'utf8')).median.point_estimate;
}

function rulesAlone() {
  const quick = ['--warm-up-time', '1', '--measurement-time', QUICK ? '1' : '3'];
  log('rules alone: native (criterion)');
  execFileSync('cargo', ['bench', '--locked', '-q', '-p', 'session-logic', '--bench', 'machines', '--', ...quick, 'rules_only_'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  log('rules alone: native vs wasmtime (criterion)');
  execFileSync('cargo', ['bench', '--locked', '-q', '-p', 'host-native', '--features', 'wasm-engine', '--bench', 'engines', '--', ...quick], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  log('rules alone: wasm-bindgen in Node');
  const nodeOut = execFileSync(process.execPath, [path.join(ROOT, 'js/bench/boundary.mjs'), QUICK ? '5000' : '20000', '--json'], { encoding: 'utf8' });
  const js = JSON.parse(nodeOut.trim().split('\n').pop());
  return {
    native: {
      rulesLoad: criterionNs('rules_only_load'),
      rulesSave: criterionNs('rules_only_save'),
      load: criterionNs('load_read_only/native'),
      save: criterionNs('save_one_key/native'),
      create: criterionNs('first_write_create/native'),
    },
    wasmtime: {
      load: criterionNs('load_read_only/wasm'),
      save: criterionNs('save_one_key/wasm'),
      create: criterionNs('first_write_create/wasm'),
    },
    node: js,
  };
}

// ---- Cost growth ----------------------------------------------------------

/** Grow the keyspace to `total` keys with copies of a real session record under random hashed-style keys. */
function grow(port, total) {
  const have = Number(cli(port, 'DBSIZE').trim());
  if (have >= total) return;
  const sample = cli(port, '--scan', '--pattern', 'sess:*').split('\n').find((k) => k && !k.includes(':user:'));
  // DUMP payloads are binary: copy inside Redis with a script.
  const lua = "local p = redis.call('DUMP', KEYS[1]) local n = tonumber(ARGV[1]) for i = 1, n do redis.call('RESTORE', ARGV[2] .. i, 3600000, p, 'REPLACE') end return n";
  let left = total - have;
  let batch = 0;
  while (left > 0) {
    const n = Math.min(left, 20000);
    cli(port, 'EVAL', lua, '1', sample, String(n), `sess:filler${total}:${batch}:`);
    left -= n;
    batch += 1;
  }
}

async function costGrowth(redis) {
  const out = { read: [], logout: [] };
  const app = await startApp(...axum('ours')(redis.port));
  const express = await startApp(...node('ours')(redis.port));
  try {
    cli(redis.port, 'FLUSHALL');
    const cookies = await seed(app.base, CFG.pool);
    const read = CASES.find((c) => c.id === 'read');
    for (const size of CFG.growth) {
      grow(redis.port, size);
      const live = Number(cli(redis.port, 'DBSIZE').trim());
      log(`cost growth: read-only with ${live} keys`);
      const row = { size, live };
      const entries = [{ id: 'axum', redis, app, cookies }, { id: 'express', redis, app: express, cookies }];
      const res = await runInterleaved(entries, read, CFG.growthRounds);
      for (const [name, x] of Object.entries(res)) row[name] = { p50: x.p50, p99: x.p99, rps: x.rps, appCpuUs: x.appCpuUs, rounds: x.rounds };
      out.read.push(row);
    }
    cli(redis.port, 'FLUSHALL');
    for (const size of CFG.logoutSizes) {
      const samples = [];
      for (let i = 0; i < CFG.logoutReps; i++) {
        const user = `bench-user-${size}-${i}`;
        const cookies2 = await seed(app.base, size, `?user=${user}`);
        const rounds = async () => Number(await (await fetch(`${app.base}/rounds`)).text());
        const roundsBefore = await rounds();
        const before = snapshot(redis.port);
        const t = performance.now();
        const r = await fetch(`${app.base}/logout-all`, { method: 'POST', headers: { cookie: cookies2[0] } });
        const ms = performance.now() - t;
        const d = delta(before, snapshot(redis.port));
        const body = await r.text();
        if (r.status !== 200) throw new Error(`logout-all: ${r.status} ${body}`);
        samples.push({ ms, rounds: (await rounds()) - roundsBefore, commands: d.commands, revoked: Number(body) });
      }
      out.logout.push({ size, ms: median(samples.map((s) => s.ms)), rounds: median(samples.map((s) => s.rounds)), commands: median(samples.map((s) => s.commands)), revoked: median(samples.map((s) => s.revoked)) });
      log(`logout everywhere, ${size} sessions: ${JSON.stringify(out.logout.at(-1))}`);
    }
  } finally {
    await stop(app.proc);
    await stop(express.proc);
  }
  return out;
}

// ---- Report ---------------------------------------------------------------

function versions() {
  const pkg = (name) => JSON.parse(readFileSync(path.join(ROOT, 'js/node_modules', name, 'package.json'), 'utf8')).version;
  const lock = existsSync(path.join(ROOT, 'bench/axum/Cargo.lock')) ? readFileSync(path.join(ROOT, 'bench/axum/Cargo.lock'), 'utf8') : '';
  const crate = (name) => lock.match(new RegExp(`name = "${name}"\\nversion = "([^"]+)"`))?.[1] ?? '?';
  const first = (cmd, argv) => {
    try {
      return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0].trim();
    } catch (e) {
      return (e.stdout || e.stderr || '?').toString().split('\n')[0].trim();
    }
  };
  return {
    node: process.version,
    express: pkg('express'),
    'express-session': pkg('express-session'),
    'connect-redis': pkg('connect-redis'),
    'redis (node-redis)': pkg('redis'),
    axum: crate('axum'),
    'tower-sessions': crate('tower-sessions'),
    'tower-sessions-redis-store': crate('tower-sessions-redis-store'),
    fred: crate('fred'),
    'redis (crate)': crate('redis'),
    rustc: first('rustc', ['--version']),
    'redis-server': first('redis-server', ['--version']),
    wrk: first('wrk', ['-v']),
    kernel: first('uname', ['-sr']),
    cpu: `${cpus()[0]?.model ?? '?'} × ${cpus().length}`,
  };
}

/** The typical mix: request kind → share (issue 13: 90 % reads, 9 % changes, 1 % sign-ins). */
const MIX = [['read', 0.9], ['write', 0.09], ['signin', 0.01]];

/** One contender's figures on MIX, from its per-kind results. */
function mixOf(byKind) {
  let secondsPerRequest = 0;
  let appCpuUs = 0;
  let redisCpuUs = 0;
  let commands = 0;
  for (const [id, share] of MIX) {
    const x = byKind[id];
    secondsPerRequest += share / x.rps.median;
    appCpuUs += share * x.appCpuUs;
    redisCpuUs += share * x.cpuUs.median;
    commands += share * x.commands;
  }
  return { rps: 1 / secondsPerRequest, appCpuUs, redisCpuUs, commands };
}

const f = (x, d = 0) => x.toFixed(d);
const range = (s, d = 0) => `${f(s.median, d)} (${f(s.min, d)}–${f(s.max, d)})`;
const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}×` : '–');
/** min–max over the rounds of a ÷ b, each taken within one round. */
const roundRange = (a, b, key) => {
  const xs = a.perRound.map((r, i) => r[key] / b.perRound[i][key]);
  return xs.every(Number.isFinite) ? `${f(Math.min(...xs), 2)}–${f(Math.max(...xs), 2)}` : '–';
};
/** req/s ratio of the medians, and (min–max of the per-round ratios). */
const rpsRatio = (a, b) => `${ratio(a.rps.median, b.rps.median)} (${roundRange(a, b, 'rps')})`;
/** App CPU per request ratio of the sums over the rounds, and (min–max of the per-round ratios). */
const cpuRatio = (a, b) => `${ratio(a.appCpuUs, b.appCpuUs)} (${roundRange(a, b, 'appCpuUs')})`;

function report({ suites, rules, growth, meta, started }) {
  const lines = [];
  const w = (s = '') => lines.push(s);
  w('# Benchmarks');
  w();
  w(`Written by \`bench/run\`${QUICK ? ' --quick (short runs: indicative only)' : ''} on ${new Date().toISOString().slice(0, 10)}; the whole run took ${f((Date.now() - started) / 60000, 1)} minutes. Every figure below was measured in that one run, on one machine; ratios compare figures of this run only.`);
  if (stalls.length) {
    w();
    w(`${stalls.length} measured run(s) completed no request at all (the app got no CPU: the machine stalled) and were run again: ${stalls.join(', ')}.`);
  }
  w();
  w('## Protocol');
  w();
  w(`- The app under test runs alone on core ${APP_CORE}; \`redis-server\` and \`wrk\` share core ${LOAD_CORE} (\`taskset\`), the same for every contender. All contenders of a table are started together, each with its own \`redis-server\`, and stay up (idle when not measured) until the table is done.`);
  w(`- Each contender serves the same tiny logic (\`js/bench/express-app.mjs\`, \`bench/axum\`): \`GET /read\` reads integer \`n\`, \`POST /write\` increments it, \`POST /login\` regenerates the session and binds a user, \`POST /seed\` creates a session.`);
  w(`- ${CFG.pool} sessions are created over HTTP first; each request carries a different one's cookie (rotating), except the visitor case (no cookie). Sign-in presents each live cookie once and puts the regenerated cookie back in the pool; its pool is created afresh before every measured run.`);
  w(`- \`wrk -t1 -c${CFG.connections}\`, contenders interleaved: per request kind, a ${CFG.warmupSeconds} s warm-up of each contender, then ${CFG.rounds} rounds; each round runs every contender once for ${CFG.seconds} s, in table order (A B C D, A B C D, …). Tables show the median over the rounds and (min–max). Ratios are taken between medians; in brackets, the min–max of the same ratio within each round (ours and the other contender measured seconds apart), which tells how stable the ratio is. Any socket error or non-2xx answer fails the run.`);
  w('- Redis commands per request: `INFO commandstats` delta over the measured runs / requests (commands run inside Lua scripts count too). Redis CPU per request: `INFO cpu` (user + sys) delta / requests, per round.');
  w(`- App CPU per request: the app process's own utime + stime (\`/proc/<pid>/stat\`, in clock ticks of 1/${CLK_TCK} s, all its threads) read before and after each measured run; the deltas summed over the rounds / the requests they completed. It is the app's cost whichever side limits req/s; app CPU µs/req × req/s / 10⁶ is the share of its core the app used (well below 1: it waited on Redis and \`wrk\`, or other work on the machine took the core).`);
  w(`- Round trips and commands *sent* per request: a separate ${CFG.probeSeconds} s run with one connection, so requests do not share pipelines: round trips = \`total_reads_processed\` delta / requests; commands sent and executed are counted with \`MONITOR\` (executed includes scripts' inner calls).`);
  w();
  w('## Versions and machine');
  w();
  w('| | |');
  w('|---|---|');
  for (const [k, v] of Object.entries(meta)) w(`| ${k} | ${v} |`);
  w();
  for (const suite of SUITES) {
    const res = suites[suite.key];
    w(`## ${suite.name}`);
    w();
    for (const c of CASES) {
      const ours = res.ours[c.id];
      const floor = res.floor[c.id];
      w(`### ${c.title}`);
      w();
      w('| contender | req/s | app CPU µs/req | Redis CPU µs/req | p50 ms | p99 ms | Redis cmds/req (executed) | cmds sent/req | round trips/req | req/s vs ours | req/s vs floor |');
      w('|---|---|---|---|---|---|---|---|---|---|---|');
      for (const contender of suite.contenders) {
        const x = res[contender.id][c.id];
        const vsOurs = contender.id === 'ours' ? '1.00×' : `ours ${rpsRatio(ours, x)}`;
        const vsFloor = contender.id === 'floor' ? '1.00×' : rpsRatio(x, floor);
        w(`| ${contender.name} | ${range(x.rps)} | ${f(x.appCpuUs, 1)} | ${range(x.cpuUs, 1)} | ${range(x.p50, 2)} | ${range(x.p99, 2)} | ${f(x.commands, 2)} | ${f(x.sent, 2)} | ${f(x.rounds, 2)} | ${vsOurs} | ${vsFloor} |`);
      }
      w();
    }
    const others = suite.contenders.filter((x) => x.id !== 'ours');
    w('### App CPU per request, ours ÷ each other contender');
    w();
    w('Below 1: our app spends less CPU per request. Ratio of the sums over the rounds; in brackets, the min–max of the per-round ratios.');
    w();
    w(`| request | ${others.map((x) => `ours ÷ ${x.name}`).join(' | ')} |`);
    w(`|---|${others.map(() => '---|').join('')}`);
    for (const c of CASES) w(`| ${c.title} | ${others.map((x) => cpuRatio(res.ours[c.id], res[x.id][c.id])).join(' | ')} |`);
    w();
    const peer = suite.contenders.find((x) => x.id === suite.cpuPeer);
    w(`**Read-only, app CPU per request, ours ÷ ${peer.name}: ${cpuRatio(res.ours.read, res[peer.id].read)}**${suite.cpuTarget ? ` (target ≤ ${suite.cpuTarget}×)` : ''}.`);
    w();
    w(`### Typical mix: ${MIX.map(([id, share]) => `${share * 100} % ${CASES.find((c) => c.id === id).title}`).join(', ')}`);
    w();
    w('Computed from the per-kind medians above, not measured as a mix: req/s = 1 ÷ Σ (share ÷ req/s of the kind), the rate one app process sustains on that mix; app CPU, Redis CPU and Redis commands per request = Σ share × the kind\'s figure. Redis CPU per request is what decides how many app servers one Redis (or one Cluster shard) carries.');
    w();
    w('| contender | req/s | app CPU µs/req | Redis CPU µs/req | Redis cmds/req (executed) | req/s, ours ÷ it | Redis CPU, ours ÷ it |');
    w('|---|---|---|---|---|---|---|');
    const ourMix = mixOf(res.ours);
    for (const contender of suite.contenders) {
      const m = mixOf(res[contender.id]);
      const mine = contender.id === 'ours';
      w(`| ${contender.name} | ${f(m.rps)} | ${f(m.appCpuUs, 1)} | ${f(m.redisCpuUs, 1)} | ${f(m.commands, 2)} | ${mine ? '1.00×' : ratio(ourMix.rps, m.rps)} | ${mine ? '1.00×' : ratio(ourMix.redisCpuUs, m.redisCpuUs)} |`);
    }
    w();
  }
  w('## The rules alone');
  w();
  w('ns per operation (criterion medians; Node: `js/bench/boundary.mjs`). "Rules only" replays recorded Redis replies, so no backend runs; the other rows include the in-memory backend executing the round.');
  w();
  w('| operation | native | wasmtime | wasm-bindgen in Node |');
  w('|---|---|---|---|');
  w(`| load, rules only (replayed replies) | ${f(rules.native.rulesLoad)} | – | ${f(rules.node.loadReplayedNs)} |`);
  w(`| save one key, rules only | ${f(rules.native.rulesSave)} | – | – |`);
  w(`| load read-only (+ in-memory backend) | ${f(rules.native.load)} | ${f(rules.wasmtime.load)} (${ratio(rules.wasmtime.load, rules.native.load)}) | ${f(rules.node.loadNs)} |`);
  w(`| save one changed key (+ backend) | ${f(rules.native.save)} | ${f(rules.wasmtime.save)} (${ratio(rules.wasmtime.save, rules.native.save)}) | ${f(rules.node.loadSaveNs - rules.node.loadNs)} (load+save − load) |`);
  w(`| first write (+ backend) | ${f(rules.native.create)} | ${f(rules.wasmtime.create)} (${ratio(rules.wasmtime.create, rules.native.create)}) | – |`);
  w();
  w('## Cost growth');
  w();
  w('Read-only requests (session-logic, axum and Express) as the keyspace grows: the pool\'s real sessions plus copies of a real session record under random keys.');
  w();
  w(`The two apps run interleaved, ${CFG.growthRounds} rounds of ${CFG.seconds} s each; medians and (min–max) over the rounds.`);
  w();
  w('| keys in Redis | axum p50 ms | axum p99 ms | axum req/s | axum app CPU µs/req | Express p50 ms | Express p99 ms | Express req/s | Express app CPU µs/req |');
  w('|---|---|---|---|---|---|---|---|---|');
  for (const r of growth.read) w(`| ${r.live} | ${range(r.axum.p50, 2)} | ${range(r.axum.p99, 2)} | ${f(r.axum.rps.median)} | ${f(r.axum.appCpuUs, 1)} | ${range(r.express.p50, 2)} | ${range(r.express.p99, 2)} | ${f(r.express.rps.median)} | ${f(r.express.appCpuUs, 1)} |`);
  w();
  w(`Logout everywhere (axum layer, \`logout_everywhere(false)\`) for one user with N sessions; median of ${CFG.logoutReps} requests, each on freshly created sessions. Round trips are the pipelines the layer sent (counted in the app), including the request's own load (1).`);
  w();
  w('| sessions | request ms | round trips (incl. load) | Redis commands (incl. scripts) | sessions revoked |');
  w('|---|---|---|---|---|');
  for (const r of growth.logout) w(`| ${r.size} | ${f(r.ms, 2)} | ${f(r.rounds)} | ${f(r.commands)} | ${f(r.revoked)} |`);
  w();
  w('## Targets');
  w();
  const ex = suites.express;
  const ax = suites.axum;
  const targets = [
    ['read-only: 1 command sent, 1 round trip (Express)', ex.ours.read.sent <= 1.001 && ex.ours.read.rounds <= 1.05, `${f(ex.ours.read.sent, 2)} sent, ${f(ex.ours.read.rounds, 2)} round trips`],
    ['read-only: 1 command sent, 1 round trip (axum)', ax.ours.read.sent <= 1.001 && ax.ours.read.rounds <= 1.05, `${f(ax.ours.read.sent, 2)} sent, ${f(ax.ours.read.rounds, 2)} round trips`],
    ['Express read-only ≥ 1.3× express-session + connect-redis', ex.ours.read.rps.median >= 1.3 * ex['express-session'].read.rps.median, rpsRatio(ex.ours.read, ex['express-session'].read)],
    ['Express read-only app CPU per request ≤ 0.75× express-session + connect-redis', ex.ours.read.appCpuUs <= 0.75 * ex['express-session'].read.appCpuUs, cpuRatio(ex.ours.read, ex['express-session'].read)],
    ['axum read-only ≥ 1.6× tower-sessions with always-save', ax.ours.read.rps.median >= 1.6 * ax['tower-always'].read.rps.median, rpsRatio(ax.ours.read, ax['tower-always'].read)],
    ['axum read-only ≥ 1.0× tower-sessions defaults', ax.ours.read.rps.median >= ax.tower.read.rps.median, rpsRatio(ax.ours.read, ax.tower.read)],
  ];
  for (const [name, s] of [['Express', ex], ['axum', ax]]) {
    for (const c of CASES) {
      targets.push([`${name} ${c.title} ≥ 0.85× its floor`, s.ours[c.id].rps.median >= 0.85 * s.floor[c.id].rps.median, rpsRatio(s.ours[c.id], s.floor[c.id])]);
    }
    targets.push([`${name} read-only Redis CPU ≤ 1.2× the floor's`, s.ours.read.cpuUs.median <= 1.2 * s.floor.read.cpuUs.median, ratio(s.ours.read.cpuUs.median, s.floor.read.cpuUs.median)]);
  }
  targets.push(['rules alone < 5 µs natively (load, replayed replies)', rules.native.rulesLoad < 5000, `${f(rules.native.rulesLoad)} ns`]);
  const big = growth.logout.find((r) => r.size === 1000);
  if (big) targets.push(['logout everywhere for 1,000 sessions in 2 round trips (plus the load)', big.rounds <= 3, `${f(big.rounds)} round trips incl. load`]);
  w('| target | met | measured |');
  w('|---|---|---|');
  for (const [name, ok, got] of targets) w(`| ${name} | ${ok ? 'yes' : '**no**'} | ${got} |`);
  w();
  return lines.join('\n');
}

// ---- Main -----------------------------------------------------------------

async function main() {
  const started = Date.now();
  if (!existsSync(AXUM_BIN)) throw new Error(`${AXUM_BIN} is missing: run bench/run (it builds it)`);
  const meta = versions();
  const suites = {};
  const partial = path.join(ROOT, 'target/bench-partial.json');
  for (const suite of SUITES) {
    if (!wanted(suite.key)) continue;
    suites[suite.key] = await runSuite(suite);
    // Kept so a failure later in the run does not lose what was measured.
    writeFileSync(partial, JSON.stringify({ suites, meta }, null, 2));
  }
  let growth;
  if (wanted('growth')) {
    const redis = await startRedis();
    growth = await costGrowth(redis);
    await stop(redis.proc);
  }
  const rules = wanted('rules') ? rulesAlone() : undefined;
  if (ONLY) {
    console.log(JSON.stringify({ suites, rules, growth, meta, stalls }, null, 2));
    return;
  }
  const text = report({ suites, rules, growth, meta, started });
  const out = path.join(ROOT, 'BENCHMARKS.md');
  writeFileSync(out, text + '\n');
  writeFileSync(path.join(ROOT, 'target/bench-results.json'), JSON.stringify({ suites, rules, growth, meta, stalls }, null, 2));
  log(`wrote ${out} in ${f((Date.now() - started) / 60000, 1)} min`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
