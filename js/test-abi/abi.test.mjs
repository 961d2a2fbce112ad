// The C-ABI wasm build of session-logic (`--features wasm-abi`, contract in
// session-logic/src/abi.rs) in a third runtime: plain Node, instantiated with
// an EMPTY import object (proof the module imports nothing), replaying every
// conformance vector through sl_alloc / sl_run / sl_dealloc.
//
// Run: node --test js/test-abi/
// Paths: SESSION_LOGIC_WASM (default <workspace>/target/wasm-abi/session_logic.wasm)
//        SESSION_LOGIC_VECTORS (default <workspace>/tests/vectors)
// The module is built by scripts/steps/wasm, never by this test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const workspace = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const wasmPath = process.env.SESSION_LOGIC_WASM || path.join(workspace, 'target', 'wasm-abi', 'session_logic.wasm');
const vectorsDir = process.env.SESSION_LOGIC_VECTORS || path.join(workspace, 'tests', 'vectors');

async function instantiate() {
  if (!existsSync(wasmPath)) {
    throw new Error(
      `wasm-abi module not found at ${wasmPath}: run \`scripts/steps/wasm\` first ` +
        '(or point SESSION_LOGIC_WASM at it)',
    );
  }
  const { instance, module } = await WebAssembly.instantiate(readFileSync(wasmPath), {});
  return { exports: instance.exports, module };
}

// One host call, exactly as the contract in abi.rs describes it.
function run(exports, input) {
  const { memory, sl_alloc, sl_dealloc, sl_run } = exports;
  const len = input.length;
  const ptr = sl_alloc(len) >>> 0;
  assert.notEqual(ptr, 0, `sl_alloc(${len}) returned 0 (out of memory)`);
  new Uint8Array(memory.buffer, ptr, len).set(input); // fresh view: alloc may grow memory
  const packed = BigInt.asUintN(64, sl_run(ptr, len));
  sl_dealloc(ptr, len);
  const outPtr = Number(packed >> 32n);
  const outLen = Number(packed & 0xffffffffn);
  assert.notEqual(outPtr, 0, 'sl_run returned a null output buffer');
  const out = new Uint8Array(memory.buffer, outPtr, outLen).slice(); // copy before freeing
  sl_dealloc(outPtr, outLen);
  return out;
}

function loadVectors() {
  if (!existsSync(vectorsDir)) return [];
  const files = readdirSync(vectorsDir)
    .filter((f) => f.endsWith('.json'))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)); // byte order, like the Rust test
  return files.map((file) => {
    const v = JSON.parse(readFileSync(path.join(vectorsDir, file), 'utf8'));
    assert.ok(v && 'input' in v && 'expect' in v, `${file}: needs "input" and "expect"`);
    return { file, name: v.name ?? file, input: v.input, expect: v.expect };
  });
}

test('wasm-abi module imports nothing and exports the ABI', async () => {
  const { exports, module } = await instantiate();
  assert.deepEqual(WebAssembly.Module.imports(module), []);
  assert.ok(exports.memory instanceof WebAssembly.Memory, 'exports memory');
  for (const name of ['sl_alloc', 'sl_dealloc', 'sl_run']) {
    assert.equal(typeof exports[name], 'function', `exports ${name}`);
  }
});

test('every conformance vector replays under Node with empty imports', async (t) => {
  const vectors = loadVectors();
  assert.ok(vectors.length > 0, `no *.json conformance vectors in ${vectorsDir} (were they generated?)`);
  const { exports } = await instantiate();
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (const v of vectors) {
    await t.test(`${v.name} (${v.file})`, () => {
      // JSON.stringify keeps the file's key order where serde_json::to_vec
      // sorts keys, so the input bytes may differ from the Rust test's; the
      // machine parses its input, so the output (checked against `expect`)
      // must not. Integers above 2^53 would lose precision here: vectors
      // should keep such values (u64 maxima, big `now`s) out of `input`.
      const input = new TextEncoder().encode(JSON.stringify(v.input));
      const output = JSON.parse(decoder.decode(run(exports, input)));
      assert.deepStrictEqual(output, v.expect, `vector ${v.name} (${v.file})`);
    });
  }
});
