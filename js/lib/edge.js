// Edge / browser entry: no filesystem. The caller passes the module, e.g.
//   import wasm from 'session-logic/session_logic_bg.wasm'; // a WebAssembly.Module on workerd
//   await init(wasm);
// `init` accepts a WebAssembly.Module, the module's bytes, a Response or a
// URL; nothing is usable before it resolves.

import initWasm, { initSync as initWasmSync } from '../pkg/session_logic.js';

let ready;

/** Instantiate the core once; later calls return the same promise. */
export function init(moduleOrBytes) {
  if (moduleOrBytes === undefined) throw new TypeError('init needs the wasm module or its bytes');
  ready ??= initWasm({ module_or_path: moduleOrBytes });
  return ready.then(() => undefined);
}

/** Synchronous instantiation from a WebAssembly.Module or bytes. */
export function initSync(moduleOrBytes) {
  initWasmSync({ module: moduleOrBytes });
  ready ??= Promise.resolve();
}

export * from './host.js';
export * from './executors.js';
export * from './fetch.js';
