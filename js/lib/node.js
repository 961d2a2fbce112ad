// Node entry: instantiates the wasm module synchronously from the file next
// to the glue at import time, so `import { Sessions } from 'session-logic'`
// needs no init call and no flags.

import { readFileSync } from 'node:fs';
import { initSync } from '../pkg/session_logic.js';

initSync({ module: readFileSync(new URL('../pkg/session_logic_bg.wasm', import.meta.url)) });

export * from './host.js';
export * from './executors.js';
export * from './fetch.js';
