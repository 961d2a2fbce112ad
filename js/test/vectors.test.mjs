// Every conformance vector in tests/vectors/ replayed through the
// wasm-bindgen build and the public JS API (Engine, Op.next/fail, Session
// import/export): the rounds and the outcome must equal what the native core
// wrote, byte for byte. Each vector runs twice: through `op.next` (JS values
// each way) and through the packed hot path `runOp` takes (`op.step` with
// wire.js packing the replies and unpacking the rounds). The same check js/test-abi/ makes for the C-ABI
// module, here through the bindings a JS app actually uses.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine, Session, packReplies, unpackRound } from '../lib/node.js';

const workspace = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const vectorsDir = process.env.SESSION_LOGIC_VECTORS || path.join(workspace, 'tests', 'vectors');
const fatal = new TextDecoder('utf-8', { fatal: true });

const hexToBytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (p) => parseInt(p, 16));
const bytesFromSerde = (b) => (typeof b === 'string' ? new TextEncoder().encode(b) : hexToBytes(b.hex));

function argFromJs(u8) {
  try {
    return fatal.decode(u8);
  } catch {
    return { hex: Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('') };
  }
}

// The serde form of a reply (what the vector stores) as the JS reply shape.
function replyToJs(r) {
  if (r === 'nil') return null;
  if ('int' in r) return r.int;
  if ('bulk' in r) return bytesFromSerde(r.bulk);
  if ('simple' in r) return { simple: r.simple };
  if ('error' in r) return { error: r.error };
  if ('array' in r) return r.array.map(replyToJs);
  throw new Error(`unknown reply ${JSON.stringify(r)}`);
}

// The JS outcome object back in the core's serde form.
function outcomeToSerde(o) {
  switch (o.kind) {
    case 'loaded':
    case 'expired':
    case 'rotated':
      return { [o.kind]: o.session.exportState() };
    case 'none':
      return { none: { reason: o.reason, session: o.session.exportState() } };
    case 'saved':
      return { saved: { session: o.session.exportState(), cookie: o.cookie } };
    case 'gone':
      return { gone: { cookie: o.cookie } };
    case 'destroyed':
      return { destroyed: { cookie: o.cookie, count: o.count } };
    case 'devices':
      return {
        devices: o.devices.map((d) => ({
          handle: d.handle,
          created: d.created,
          last_seen: d.lastSeen,
          expires_at: d.expiresAt,
          auth_at: d.authAt,
          current: d.current,
        })),
      };
    default:
      throw new Error(`unknown outcome kind ${o.kind}`);
  }
}

const errorToSerde = (e) => {
  assert.equal(e.name, 'SessionError');
  assert.ok(e instanceof Error);
  return { error: { code: e.code, status: e.status, message: e.message, detail: e.detail } };
};

function startOp(input) {
  const engine = new Engine(input.config);
  const entropy = input.entropy ? hexToBytes(input.entropy) : new Uint8Array(32);
  const [[kind, a]] = Object.entries(input.op);
  const s = (state) => Session.importState(state);
  const now = input.now;
  switch (kind) {
    case 'load':
      return engine.loadHinted(a.cookie, a.client ?? null, now, a.touch_hint ?? undefined);
    case 'load_id':
      return engine.loadId(a.id, a.client ?? null, now);
    case 'save':
      return engine.save(s(a.session), entropy, now);
    case 'regenerate':
      return engine.regenerate(s(a.session), entropy, now);
    case 'destroy':
      return engine.destroy(s(a.session), now);
    case 'touch':
      return engine.touch(s(a.session), now);
    case 'destroy_all_for_user':
      return a.keep ? engine.destroyAllForUserExcept(a.user, s(a.keep), now) : engine.destroyAllForUser(a.user, now);
    case 'list_user_sessions':
      return a.current ? engine.listUserSessionsFrom(a.user, s(a.current), now) : engine.listUserSessions(a.user, now);
    case 'destroy_user_session':
      return engine.destroyUserSession(a.user, a.handle, now);
    default:
      throw new Error(`unknown op ${kind}`);
  }
}

function replay(input) {
  const rounds = [];
  let op;
  try {
    op = startOp(input);
  } catch (e) {
    return { rounds, outcome: errorToSerde(e) };
  }
  let step = op.next();
  for (let i = 0; i < 64; i++) {
    if (step.outcome) return { rounds, outcome: { ok: outcomeToSerde(step.outcome) } };
    if (step.error) return { rounds, outcome: errorToSerde(step.error) };
    rounds.push(step.round.map((argv) => argv.map(argFromJs)));
    if (input.failure && input.failure.round === i) {
      const { kind, detail } = input.failure.failure;
      op.fail(kind, detail ?? null);
      step = op.next();
      continue;
    }
    const replies = input.replies?.[i];
    if (!replies) return { rounds, outcome: null };
    step = op.next(replies.map(replyToJs));
  }
  return { rounds, outcome: null };
}

/** The same replay through `op.step`, one packed buffer each way. */
function replayPacked(input) {
  const rounds = [];
  let op;
  try {
    op = startOp(input);
  } catch (e) {
    return { rounds, outcome: errorToSerde(e) };
  }
  try {
    let step = op.step();
    for (let i = 0; i < 64; i++) {
      if (typeof step === 'string') {
        const outcome = JSON.parse(step);
        if (outcome.session === true) outcome.session = op.takeSession();
        return { rounds, outcome: { ok: outcomeToSerde(outcome) } };
      }
      rounds.push(unpackRound(step).map((argv) => argv.map((a) => argFromJs(new Uint8Array(a)))));
      if (input.failure && input.failure.round === i) {
        const { kind, detail } = input.failure.failure;
        op.fail(kind, detail ?? null);
        step = op.step();
        continue;
      }
      const replies = input.replies?.[i];
      if (!replies) return { rounds, outcome: null };
      step = op.step(packReplies(replies.map(replyToJs)));
    }
  } catch (e) {
    return { rounds, outcome: errorToSerde(e) };
  }
  return { rounds, outcome: null };
}

const files = readdirSync(vectorsDir).filter((f) => f.endsWith('.json')).sort();

test('the vectors are there', () => {
  assert.ok(files.length >= 40, `expected the conformance vectors in ${vectorsDir}, found ${files.length}`);
});

for (const file of files) {
  const v = JSON.parse(readFileSync(path.join(vectorsDir, file), 'utf8'));
  test(`vector ${v.name ?? file}`, () => {
    assert.deepStrictEqual(replay(v.input), v.expect);
    assert.deepStrictEqual(replayPacked(v.input), v.expect, 'packed path');
  });
}
