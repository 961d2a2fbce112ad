// Edge / browser entry: the same API once `init` has run.
export * from './index.js';

/** Instantiate the core from a WebAssembly.Module, its bytes, a Response or a URL. */
export function init(moduleOrBytes: WebAssembly.Module | BufferSource | Response | URL | Promise<Response>): Promise<void>;
/** Synchronous instantiation from a WebAssembly.Module or bytes. */
export function initSync(moduleOrBytes: WebAssembly.Module | BufferSource): void;
