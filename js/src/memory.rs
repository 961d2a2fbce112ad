//! The core's in-memory backend for JS: exactly the commands and scripts the
//! machines emit, with Redis 7.0 semantics and `now` passed in. For tests and
//! local development without a Redis; it answers in the JS reply shape that
//! `Op.next` accepts, so it plugs in where a Redis executor would.

use js_sys::Array;
use wasm_bindgen::prelude::*;

use crate::convert::{js_error, now_from, reply_to_js, round_from_js};

/// An in-memory Redis for the session commands.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct Memory {
    inner: session_logic::memory::Memory,
}

#[wasm_bindgen]
impl Memory {
    /// An empty keyspace with no scripts loaded.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Memory {
        Memory::default()
    }

    /// Execute a round (as `Op.next` yields it) at `now`; one reply per
    /// command, in order.
    #[wasm_bindgen(js_name = executeRound)]
    pub fn execute_round(&mut self, round: &JsValue, now: f64) -> Result<Array, JsValue> {
        let now = now_from(now).map_err(|e| js_error(&e))?;
        let round = round_from_js(round).map_err(|e| js_error(&e))?;
        Ok(self
            .inner
            .execute_round(&round, now)
            .iter()
            .map(reply_to_js)
            .collect())
    }

    /// Forget loaded scripts (what `SCRIPT FLUSH` does).
    #[wasm_bindgen(js_name = flushScripts)]
    pub fn flush_scripts(&mut self) {
        self.inner.flush_scripts();
    }

    /// What `WAIT` answers (replicas acknowledging).
    #[wasm_bindgen(js_name = setReplicas)]
    pub fn set_replicas(&mut self, n: i32) {
        self.inner.set_replicas(i64::from(n));
    }

    /// Live keys at `now` (lossy UTF-8), in creation order.
    pub fn keys(&self, now: f64) -> Result<Array, JsValue> {
        let now = now_from(now).map_err(|e| js_error(&e))?;
        Ok(self
            .inner
            .keys(now)
            .iter()
            .map(|k| JsValue::from_str(&String::from_utf8_lossy(k)))
            .collect())
    }
}
