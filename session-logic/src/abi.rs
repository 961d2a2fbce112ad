//! The plain C-ABI WebAssembly surface (feature `wasm-abi`).
//!
//! This is the second of the two wasm builds of the core (see DESIGN.md, "Two
//! wasm builds of one core"): a module with **no imports at all**, so that
//! wasmtime (`session-host --engine wasm`), plain Node
//! (`WebAssembly.instantiate(bytes, {})`) and any other runtime can load it
//! without wasm-bindgen glue. It is built with
//!
//! ```text
//! cargo rustc -p session-logic --target wasm32-unknown-unknown --release \
//!     --features wasm-abi --crate-type cdylib
//! ```
//!
//! # Contract (stable; Node and wasmtime hosts depend on it)
//!
//! The module exports its linear memory as `memory` and three functions. All
//! pointers and lengths are wasm32 `i32` values interpreted as **unsigned**
//! byte offsets/counts into `memory`.
//!
//! | export | wasm signature | meaning |
//! |---|---|---|
//! | `sl_alloc(len)` | `(i32) -> i32` | a pointer to `len` writable, zero-filled bytes owned by the host until it passes them to `sl_dealloc`; `0` if the allocation failed. `len == 0` is allowed (returns a non-zero dangling pointer; nothing to read or write). |
//! | `sl_dealloc(ptr, len)` | `(i32, i32) -> ()` | frees a buffer returned by `sl_alloc(len)` or by `sl_run` (with exactly that `len`). `ptr == 0` is a no-op. |
//! | `sl_run(ptr, len)` | `(i32, i32) -> i64` | runs one conformance-vector input: reads the `len` bytes at `ptr` (the JSON `input` object of a vector), calls [`crate::conformance::run_json`], and returns the output buffer packed as `(out_ptr << 32) \| out_len` (both unsigned 32-bit). The input is **not** freed; the host frees it. |
//!
//! | `sl_configure(ptr, len)` | `(i32, i32) -> i64` | configures this instance's engine from config JSON; the output is `{"ok":true}` or `{"error":…}`. Call it once per instance before `sl_start`. |
//! | `sl_start(ptr, len)` | `(i32, i32) -> i64` | starts an operation from `{now, entropy, op}` JSON (`op` as in a vector); the output is a `u32` op number (LE, 0 when the op finished at once) followed by a *step*. |
//! | `sl_step(op, ptr, len)` | `(i32, i32, i32) -> i64` | feeds op `op` the replies of its last round in the packed form of [`crate::wire`]; the output is its next step. |
//! | `sl_fail(op, ptr, len)` | `(i32, i32, i32) -> i64` | the round could not complete: `ptr..len` is a `BackendFailure` as JSON (`{"kind":"timeout"}`); the output is the next step (the typed backend error). |
//! | `sl_drop(op)` | `(i32) -> ()` | forgets an op the host gives up on (a finished op is forgotten by itself). |
//!
//! A step is `0x00` followed by the packed round to send, or `0x01`
//! followed by `{"ok": outcome}` / `{"error": …}` JSON: see
//! [`crate::conformance::Driver`], which these five wrap. That is the hot
//! path (`session-host --engine wasm`): one buffer each way per round, the
//! engine built once per instance. `sl_run` replays a whole vector per call
//! and stays for the conformance runners. Inputs are never freed by the
//! module; every output buffer is the host's to `sl_dealloc`.
//!
//! A host call sequence for `sl_run` is therefore:
//!
//! ```text
//! in_ptr = sl_alloc(n)            // 0 => out of memory
//! memory[in_ptr .. in_ptr+n] = input
//! packed = sl_run(in_ptr, n)      // u64; read as unsigned
//! sl_dealloc(in_ptr, n)
//! out_ptr = packed >> 32; out_len = packed & 0xffff_ffff
//! output = copy of memory[out_ptr .. out_ptr+out_len]   // JSON
//! sl_dealloc(out_ptr, out_len)
//! ```
//!
//! Hosts must re-read the memory buffer after every call (an allocation may
//! grow memory, which detaches a JS `ArrayBuffer`). A packed result of `0`
//! (null output pointer) means the output could not be handed out; it never
//! happens on wasm32 short of running out of memory. The output is never
//! empty otherwise: [`crate::conformance::run_json`] always produces a JSON
//! document, with an `error` outcome for malformed input.
//!
//! Rules for the host (these are what make the `unsafe` below sound):
//! 1. `sl_run` and `sl_dealloc` are only called with a `(ptr, len)` pair
//!    exactly as returned by `sl_alloc(len)` / `sl_run`, not yet freed.
//! 2. Each buffer is freed at most once, and not read after it is freed.
//! 3. Calls are not reentrant (wasm instances are single-threaded; the module
//!    imports nothing, so it can never call back into the host).
//!
//! Nothing in this module panics; a panic in wasm is a trap. Allocation
//! failure in `sl_alloc` is reported as `0` rather than aborting.
//!
//! On native targets the functions still compile (so `cargo clippy
//! --all-features` covers them) but native hosts never call them: they link
//! [`crate::conformance::run_json`] directly. Natively a heap address may not
//! fit in 32 bits; the functions then free what they allocated and return `0`.

// This module is the only place in the crate that needs `unsafe`: it turns
// integers received from the host into pointers. Each block carries a SAFETY
// argument; they all rest on one invariant — the only (ptr, len) pairs the
// host ever hands us are ones this module produced from a leaked
// `Box<[u8]>` of exactly `len` bytes (host rules 1–3 above).
//
// The exports are `pub(crate)`: `#[unsafe(no_mangle)]` exports them from the
// cdylib by symbol name whatever their Rust visibility, and `pub` inside this
// private module would only trip `unreachable_pub`. `sl_run`/`sl_dealloc` are
// `unsafe fn` because their arguments must satisfy the host rules; that does
// not change the wasm signature.
#![allow(unsafe_code)]

use core::cell::RefCell;
use core::ptr;

use crate::conformance::Driver;

std::thread_local! {
    /// The instance's engine and its ops in flight. A wasm instance is
    /// single-threaded and no export calls another, so the `RefCell` is
    /// never borrowed twice.
    static DRIVER: RefCell<Driver> = RefCell::new(Driver::default());
}

/// Leak a boxed slice and return its address, or 0 when the address does not
/// fit the 32-bit ABI (only possible natively), in which case it is freed.
fn leak(buf: Box<[u8]>) -> u32 {
    let len = buf.len();
    let raw: *mut [u8] = Box::into_raw(buf);
    let data: *mut u8 = raw.cast::<u8>();
    match u32::try_from(data.expose_provenance()) {
        Ok(addr) if addr != 0 => addr,
        _ => {
            // SAFETY: `raw` came from `Box::into_raw` on the line above and has
            // not been freed or shared; rebuilding the box with the same
            // pointer and length and dropping it frees it exactly once.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(data, len)) });
            0
        }
    }
}

/// Allocate `len` zero-filled bytes as a `Box<[u8]>` (capacity == len), or
/// `None` if the allocator refuses. Never aborts on allocation failure.
fn try_alloc_zeroed(len: usize) -> Option<Box<[u8]>> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v.into_boxed_slice())
}

/// Allocate `len` writable bytes for the host. Returns the pointer, or 0 if
/// the allocation failed. See the module docs for the contract.
#[unsafe(no_mangle)]
pub(crate) extern "C" fn sl_alloc(len: u32) -> u32 {
    // Zero-filled so that every byte sl_run may later read is initialised,
    // even if the host writes fewer bytes than it asked for.
    match usize::try_from(len).ok().and_then(try_alloc_zeroed) {
        Some(buf) => leak(buf),
        None => 0,
    }
}

/// Free a buffer returned by [`sl_alloc`] or [`sl_run`]. `ptr == 0` is a no-op.
///
/// # Safety
///
/// `(ptr, len)` must be exactly a pair returned by `sl_alloc(len)` or unpacked
/// from `sl_run`, not yet freed (module docs, host rules 1–2).
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_dealloc(ptr: u32, len: u32) {
    if ptr == 0 {
        return;
    }
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    let Ok(addr) = usize::try_from(ptr) else {
        return;
    };
    let data: *mut u8 = ptr::with_exposed_provenance_mut(addr);
    // SAFETY: by the caller's contract `ptr` is the data pointer of a
    // `Box<[u8]>` of exactly `len` bytes that `leak` turned into an integer
    // with `expose_provenance` (so `with_exposed_provenance_mut` recovers a
    // pointer with its provenance), and it has not been freed. `Box<[u8]>`
    // always has capacity == len, and `[u8]` has alignment 1, so the layout
    // we free is exactly the layout that was allocated. For `len == 0` the box
    // is a dangling non-null pointer and dropping it frees nothing.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(data, len)) });
}

/// The input bytes at `ptr..ptr+len`; empty for a null or empty buffer.
///
/// # Safety
///
/// `(ptr, len)` must be a live buffer returned by `sl_alloc(len)` (module
/// docs, host rule 1), not freed while the slice lives.
unsafe fn input<'a>(ptr: u32, len: u32) -> &'a [u8] {
    match (usize::try_from(ptr), usize::try_from(len)) {
        (Ok(addr), Ok(len)) if addr != 0 && len != 0 => {
            let data: *const u8 = ptr::with_exposed_provenance(addr);
            // SAFETY: by the caller's contract `ptr` is the data pointer of a
            // live `Box<[u8]>` of exactly `len` bytes allocated by `sl_alloc`
            // (provenance recovered as in `sl_dealloc`). Those bytes are
            // initialised (`sl_alloc` zero-fills, the host only overwrites),
            // `len <= isize::MAX` because it was a valid allocation, and
            // nothing else accesses the buffer while this borrow lives: the
            // instance is single-threaded and imports nothing, so the host
            // cannot run until the export returns, and every export is done
            // with the slice before it returns.
            unsafe { &*ptr::slice_from_raw_parts(data, len) }
        }
        // Null or empty: empty input (the callee reports a typed error).
        _ => &[],
    }
}

/// Hand `out` to the host as `(out_ptr << 32) | out_len`.
fn output(out: Vec<u8>) -> u64 {
    let out = out.into_boxed_slice();
    let Ok(out_len) = u32::try_from(out.len()) else {
        // Cannot happen on wasm32 (a buffer longer than 4 GiB cannot exist);
        // `out` is dropped here rather than leaked.
        return 0;
    };
    match leak(out) {
        0 => 0,
        out_ptr => (u64::from(out_ptr) << 32) | u64::from(out_len),
    }
}

/// Run one conformance-vector input (JSON bytes at `ptr..ptr+len`) and return
/// the output buffer as `(out_ptr << 32) | out_len`. The input is not freed.
///
/// # Safety
///
/// `(ptr, len)` must be a live buffer returned by `sl_alloc(len)` (module
/// docs, host rule 1). `len == 0` is always allowed and reads nothing.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_run(ptr: u32, len: u32) -> u64 {
    // SAFETY: the caller's contract is `input`'s.
    output(crate::conformance::run_json(unsafe { input(ptr, len) }))
}

/// Configure this instance's engine (config JSON in; `{"ok":true}` or
/// `{"error":…}` out).
///
/// # Safety
///
/// As [`sl_run`].
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_configure(ptr: u32, len: u32) -> u64 {
    // SAFETY: the caller's contract is `input`'s.
    let config = unsafe { input(ptr, len) };
    output(DRIVER.with(|d| d.borrow_mut().configure(config)))
}

/// Start an operation (`{now, entropy, op}` JSON in; the op number and its
/// first step out).
///
/// # Safety
///
/// As [`sl_run`].
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_start(ptr: u32, len: u32) -> u64 {
    // SAFETY: the caller's contract is `input`'s.
    let start = unsafe { input(ptr, len) };
    output(DRIVER.with(|d| d.borrow_mut().start(start)))
}

/// Feed op `op` its packed replies; its next step out.
///
/// # Safety
///
/// As [`sl_run`] for `(ptr, len)`.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_step(op: u32, ptr: u32, len: u32) -> u64 {
    // SAFETY: the caller's contract is `input`'s.
    let replies = unsafe { input(ptr, len) };
    output(DRIVER.with(|d| d.borrow_mut().step(op, replies)))
}

/// Op `op`'s round failed (`BackendFailure` JSON in); its next step out.
///
/// # Safety
///
/// As [`sl_run`] for `(ptr, len)`.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn sl_fail(op: u32, ptr: u32, len: u32) -> u64 {
    // SAFETY: the caller's contract is `input`'s.
    let failure = unsafe { input(ptr, len) };
    output(DRIVER.with(|d| d.borrow_mut().fail(op, failure)))
}

/// Forget op `op` (unknown numbers are ignored).
#[unsafe(no_mangle)]
pub(crate) extern "C" fn sl_drop(op: u32) {
    DRIVER.with(|d| d.borrow_mut().drop_op(op));
}

#[cfg(test)]
mod tests {
    //! Native exercise of the bookkeeping. Only meaningful when the heap
    //! happens to hand out addresses below 4 GiB; otherwise `sl_alloc`
    //! correctly returns 0 and these tests check that instead.
    use super::*;

    #[test]
    fn alloc_run_dealloc_round_trip() {
        let input = br#"{}"#;
        let len = u32::try_from(input.len()).unwrap_or(0);
        let p = sl_alloc(len);
        if p == 0 {
            return; // native heap above 4 GiB: contract says 0.
        }
        // SAFETY (test): `p` is a live sl_alloc buffer of `len` bytes.
        unsafe {
            let dst: *mut u8 = ptr::with_exposed_provenance_mut(p as usize);
            ptr::copy_nonoverlapping(input.as_ptr(), dst, input.len());
            let packed = sl_run(p, len);
            sl_dealloc(p, len);
            let (out_ptr, out_len) = ((packed >> 32) as u32, packed as u32);
            if out_ptr != 0 {
                let src: *const u8 = ptr::with_exposed_provenance(out_ptr as usize);
                let out = core::slice::from_raw_parts(src, out_len as usize).to_vec();
                sl_dealloc(out_ptr, out_len);
                assert_eq!(out, crate::conformance::run_json(input));
            }
        }
    }

    #[test]
    fn zero_length_and_null_are_harmless() {
        let p = sl_alloc(0);
        // SAFETY (test): pairs produced by sl_alloc / null.
        unsafe {
            sl_dealloc(p, 0);
            sl_dealloc(0, 0);
            sl_dealloc(0, 17);
            let packed = sl_run(0, 0);
            let (out_ptr, out_len) = ((packed >> 32) as u32, packed as u32);
            sl_dealloc(out_ptr, out_len);
        }
    }
}
