//! `Session` for JS: the core's session (data plus this request's delta)
//! behind a class, so `set`/`remove`/`clear` record exactly the delta the
//! next `save` sends. Values are JSON only (stored with `JSON.stringify`
//! semantics; no value format that could execute code when read back).

use js_sys::{Array, Object};
use session_logic::UserId;
use session_logic::session::Status;
use wasm_bindgen::prelude::*;

use crate::convert::{input, js_error, js_to_json, json_to_js, now_from};

/// A session: data plus the changes this request made to it.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Session {
    pub(crate) inner: session_logic::Session,
}

impl Session {
    pub(crate) fn from_core(inner: session_logic::Session) -> Session {
        Session { inner }
    }
}

#[wasm_bindgen]
impl Session {
    /// The session ID once stored, else `null`. It is the bearer secret:
    /// never log it (log `engine.sidHash(session)`).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> Option<String> {
        self.inner.id().map(|id| id.expose().to_owned())
    }

    /// `"new"` (not stored yet), `"live"` or `"rotated"`.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        match self.inner.status() {
            Status::New => "new",
            Status::Live => "live",
            Status::Rotated => "rotated",
        }
        .to_owned()
    }

    /// Whether `save` has anything to write.
    #[wasm_bindgen(getter, js_name = isDirty)]
    pub fn is_dirty(&self) -> bool {
        self.inner.is_dirty()
    }

    /// The bound user id, or `null`.
    #[wasm_bindgen(getter)]
    pub fn user(&self) -> Option<String> {
        self.inner.user().map(|u| u.as_str().to_owned())
    }

    /// When the bound user signed in (unix ms), or `null`.
    #[wasm_bindgen(getter, js_name = authAt)]
    pub fn auth_at(&self) -> Option<f64> {
        // Unix ms stay below 2^53 for the next 285,000 years.
        #[allow(clippy::cast_precision_loss)]
        self.inner.auth_at().map(|t| t.0 as f64)
    }

    /// The absolute deadline of a stored session (unix ms): the session
    /// ends then however active it is, and the cookie's `Max-Age` points at
    /// it. `null` before the first save.
    #[wasm_bindgen(getter)]
    pub fn deadline(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        self.inner.meta().map(|m| m.deadline.0 as f64)
    }

    /// The client fingerprint differs from the stored one (policy `report`).
    /// Whether `save` would write anything (changes, or an ID renewal due);
    /// when not, hosts skip it.
    #[wasm_bindgen(getter, js_name = needsSave)]
    pub fn needs_save(&self) -> bool {
        self.inner.needs_save()
    }

    /// The client fingerprint differs from the stored one (policy `report`).
    #[wasm_bindgen(getter, js_name = bindingMismatch)]
    pub fn binding_mismatch(&self) -> bool {
        self.inner.binding_mismatch()
    }

    /// A data value (a fresh copy), or `undefined`.
    pub fn get(&self, key: &str) -> JsValue {
        self.inner.get(key).map_or(JsValue::UNDEFINED, json_to_js)
    }

    /// Whether a data key is set.
    pub fn has(&self, key: &str) -> bool {
        self.inner.get(key).is_some()
    }

    /// Set a data value (any JSON value). Keys are 1..=256 bytes and must not
    /// start with `$`. Setting an equal value records no change.
    pub fn set(&mut self, key: &str, value: &JsValue) -> Result<(), JsValue> {
        let value = js_to_json(value, "session value").map_err(|e| js_error(&e))?;
        self.inner
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| js_error(&e.into()))
    }

    /// Remove a data value; returns whether it was set.
    pub fn remove(&mut self, key: &str) -> bool {
        self.inner.remove(key).is_some()
    }

    /// Remove every data value.
    pub fn clear(&mut self) {
        self.inner.clear();
    }

    /// The data keys, sorted.
    pub fn keys(&self) -> Array {
        self.inner
            .data()
            .keys()
            .map(|k| JsValue::from_str(k))
            .collect()
    }

    /// All data as a plain object (a copy), in one `JSON.parse`.
    pub fn data(&self) -> JsValue {
        serde_json::to_string(self.inner.data())
            .ok()
            .and_then(|text| js_sys::JSON::parse(&text).ok())
            .unwrap_or_else(|| Object::new().into())
    }

    /// All data as JSON text (`{"key": value, …}`, keys sorted): what a
    /// host parses once, and compares against to find changed keys.
    #[wasm_bindgen(js_name = dataJson)]
    pub fn data_json(&self) -> String {
        serde_json::to_string(self.inner.data()).unwrap_or_else(|_| "{}".to_owned())
    }

    /// `set` with the value as JSON text (a host that already serialized it
    /// to detect the change saves a second serialization).
    #[wasm_bindgen(js_name = setJson)]
    pub fn set_json(&mut self, key: &str, json: &str) -> Result<(), JsValue> {
        let value = serde_json::from_str(json)
            .map_err(|e| js_error(&input("session value", format!("is not JSON: {e}"))))?;
        self.inner
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| js_error(&e.into()))
    }

    /// Bind a user at sign-in (records `authAt = now` and indexes the session
    /// for logout-everywhere). Regenerate in the same request.
    #[wasm_bindgen(js_name = setUser)]
    pub fn set_user(&mut self, user: &str, now: f64) -> Result<(), JsValue> {
        let now = now_from(now).map_err(|e| js_error(&e))?;
        let user = UserId::new(user).map_err(|e| js_error(&e.into()))?;
        self.inner.set_user(user, now);
        Ok(())
    }

    /// Unbind the user (sign-out that keeps the session).
    #[wasm_bindgen(js_name = clearUser)]
    pub fn clear_user(&mut self) {
        self.inner.clear_user();
    }

    /// The whole session state as the core serializes it (the form the
    /// conformance vectors use). Contains the ID: never log it.
    #[wasm_bindgen(js_name = exportState)]
    pub fn export_state(&self) -> Result<JsValue, JsValue> {
        serde_json::to_value(&self.inner)
            .map(|v| json_to_js(&v))
            .map_err(|e| js_error(&input("session", e.to_string())))
    }

    /// A session from `exportState()` output (tests, cross-host transfer).
    #[wasm_bindgen(js_name = importState)]
    pub fn import_state(state: &JsValue) -> Result<Session, JsValue> {
        let value = js_to_json(state, "session state").map_err(|e| js_error(&e))?;
        serde_json::from_value(value)
            .map(Session::from_core)
            .map_err(|e| js_error(&input("session state", e.to_string())))
    }

    /// An independent copy.
    #[wasm_bindgen(js_name = clone)]
    pub fn duplicate(&self) -> Session {
        self.clone()
    }
}
