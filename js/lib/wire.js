// The packed wire form on the JS side (the layout is documented once, in
// session-logic/src/wire.rs): a round leaves the core as one byte buffer and
// the replies go back as one, so a round costs two calls into the module
// instead of one per argument and per reply element. Executors keep their
// plain shape (argv arrays in, reply values out); the packing happens here,
// in JS, where it is cheap.

import { sessionError } from './errors.js';

const NIL = 0;
const INT = 1;
const BULK = 2;
const SIMPLE = 3;
const ERROR = 4;
const ARRAY = 5;
const MAX_DEPTH = 16;
const TWO_32 = 2 ** 32;

const encoder = new TextEncoder();
const hasBuffer = typeof Buffer === 'function';

const decoder = new TextDecoder();

/**
 * A packed round (`[0, …round]` as `Op.step` answers, from offset 1) as
 * argv arrays of byte views on the same buffer (Buffers in Node, which
 * node-redis and ioredis write without a copy), or with `text` as argv
 * arrays of strings (everything the core emits is UTF-8): node-redis
 * writes a string argument into one string per command, but each Buffer
 * argument as a chunk of its own, so a round of Buffers costs a socket
 * write of dozens of chunks.
 */
export function unpackRound(bytes, offset = 1, text = false) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const buf = hasBuffer ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes;
  let at = offset;
  const count = view.getUint32(at, true);
  at += 4;
  const round = new Array(count);
  for (let c = 0; c < count; c++) {
    const n = view.getUint32(at, true);
    at += 4;
    const argv = new Array(n);
    for (let a = 0; a < n; a++) {
      const len = view.getUint32(at, true);
      at += 4;
      const end = at + len;
      if (!text) argv[a] = buf.subarray(at, end);
      else argv[a] = hasBuffer ? buf.utf8Slice(at, end) : decoder.decode(buf.subarray(at, end));
      at = end;
    }
    round[c] = argv;
  }
  return round;
}

// One scratch buffer, grown on demand: a round's replies are packed into it
// and copied into the module by the call that takes them, so it is free
// again as soon as that call returns.
let scratch = new Uint8Array(4096);
let scratchView = new DataView(scratch.buffer);
let pos = 0;

function room(n) {
  if (pos + n <= scratch.length) return;
  let size = scratch.length * 2;
  while (size < pos + n) size *= 2;
  const bigger = new Uint8Array(size);
  bigger.set(scratch.subarray(0, pos));
  scratch = bigger;
  scratchView = new DataView(scratch.buffer);
}

function putHeader(tag, len) {
  room(5 + len);
  scratch[pos] = tag;
  scratchView.setUint32(pos + 1, len, true);
  pos += 5;
}

function putText(tag, text) {
  // UTF-8 takes at most 3 bytes per UTF-16 unit; write, then patch the length.
  room(5 + text.length * 3);
  scratch[pos] = tag;
  const { written } = encoder.encodeInto(text, scratch.subarray(pos + 5));
  scratchView.setUint32(pos + 1, written, true);
  pos += 5 + written;
}

function putInt(n) {
  room(9);
  scratch[pos] = INT;
  if (typeof n === 'bigint') {
    scratchView.setBigInt64(pos + 1, n, true);
  } else {
    // A safe integer as two's-complement i64 without BigInt.
    const hi = Math.floor(n / TWO_32);
    scratchView.setUint32(pos + 1, n - hi * TWO_32, true);
    scratchView.setInt32(pos + 5, hi, true);
  }
  pos += 9;
}

function put(reply, depth) {
  if (typeof reply === 'string') return putText(BULK, reply);
  if (reply instanceof Uint8Array) {
    putHeader(BULK, reply.length);
    scratch.set(reply, pos);
    pos += reply.length;
    return;
  }
  if (Array.isArray(reply)) {
    if (depth >= MAX_DEPTH) throw usage(`reply nested deeper than ${MAX_DEPTH}`);
    putHeader(ARRAY, 0);
    scratchView.setUint32(pos - 4, reply.length, true);
    for (let i = 0; i < reply.length; i++) put(reply[i], depth + 1);
    return;
  }
  if (reply === null || reply === undefined) {
    room(1);
    scratch[pos++] = NIL;
    return;
  }
  if (typeof reply === 'number') {
    if (!Number.isSafeInteger(reply)) throw usage(`integer reply ${reply} is not a safe integer (pass a bigint)`);
    return putInt(reply);
  }
  if (typeof reply === 'bigint') {
    if (reply < -(2n ** 63n) || reply >= 2n ** 63n) throw usage('bigint reply does not fit in 64 bits');
    return putInt(reply);
  }
  if (reply instanceof Error) return putText(ERROR, String(reply.message));
  if (typeof reply === 'object') {
    if (typeof reply.error === 'string') return putText(ERROR, reply.error);
    if (typeof reply.simple === 'string') return putText(SIMPLE, reply.simple);
  }
  throw usage('a reply must be null, an integer, a string, bytes, an array, an Error, {error} or {simple}');
}

/**
 * One round's replies (the JS reply shape executors produce) packed for
 * `Op.step`. The result is a view on a shared scratch buffer: pass it
 * straight to `step`, which copies it, and do not keep it.
 */
export function packReplies(replies) {
  if (!Array.isArray(replies)) throw usage('replies must be an array, one per command');
  pos = 0;
  room(4);
  scratchView.setUint32(0, replies.length, true);
  pos = 4;
  for (let i = 0; i < replies.length; i++) put(replies[i], 0);
  return scratch.subarray(0, pos);
}

function usage(message) {
  return sessionError('usage', 500, message);
}
