//! Values across the boundary: rounds out as arrays of byte arrays, replies
//! in as plain JS values, errors out as `SessionError` objects, and the two
//! host inputs (`now`, entropy) checked before they reach the core.
//!
//! The JS reply shape (what executors produce, and what `Memory` answers):
//!
//! | JS value | core `Reply` |
//! |---|---|
//! | `null` / `undefined` | `Nil` |
//! | safe integer `number`, `bigint` | `Int` |
//! | `string`, `Uint8Array` (incl. `Buffer`) | `Bulk` |
//! | `Array` | `Array` |
//! | `Error` instance, `{ error: string }` | `Error` (Redis error replies are data) |
//! | `{ simple: string }` | `Simple` |
//!
//! A string is taken as a bulk reply: the machines never need to tell a
//! simple string from a bulk one, and clients differ on which they return.

use js_sys::{Array, Object, Reflect, Uint8Array};
use serde_json::Value;
use session_logic::error::{InputError, UsageError};
use session_logic::step::{Command, Reply, Round};
use session_logic::{Entropy, Error, UnixMillis};
use wasm_bindgen::{JsCast, JsValue};

/// Largest `now` a JS number carries exactly (2^53 - 1).
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// Deepest reply nesting accepted; ours are at most two levels deep, and the
/// bound keeps a hostile reply from exhausting the stack.
const MAX_DEPTH: usize = 16;

/// `now` from a JS number: a non-negative integer of milliseconds.
pub fn now_from(now: f64) -> Result<UnixMillis, Error> {
    if (0.0..=MAX_SAFE).contains(&now) && now.fract() == 0.0 {
        // Exact: a non-negative integer below 2^53 converts without loss.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(UnixMillis(now as u64))
    } else {
        Err(input(
            "now",
            format!("must be unix milliseconds as a non-negative safe integer, got {now}"),
        ))
    }
}

/// Entropy from the host's CSPRNG: exactly 32 bytes.
pub fn entropy_from(bytes: &[u8]) -> Result<Entropy, Error> {
    <[u8; 32]>::try_from(bytes).map(Entropy).map_err(|_| {
        input(
            "entropy",
            format!(
                "must be 32 bytes from crypto.getRandomValues, got {}",
                bytes.len()
            ),
        )
    })
}

/// An input error (`invalid_input`, 400).
pub fn input(what: &str, detail: String) -> Error {
    Error::Input(InputError {
        what: what.to_owned(),
        detail,
    })
}

/// A usage error (`usage`, 500): the host broke the loop contract.
pub fn usage(why: String) -> Error {
    Error::Usage(UsageError(why))
}

/// Set a property on an object we just created. `Reflect::set` only fails on
/// frozen objects or throwing setters, which a fresh plain object has neither.
pub(crate) fn set(target: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

/// A JSON value as the equivalent JS value (via `JSON.parse`, so objects come
/// out as plain objects, not `Map`s).
pub(crate) fn json_to_js(value: &Value) -> JsValue {
    serde_json::to_string(value)
        .ok()
        .and_then(|text| js_sys::JSON::parse(&text).ok())
        .unwrap_or(JsValue::NULL)
}

/// A JS value as JSON (via `JSON.stringify`): JSON is the only value format
/// a session stores, so functions, symbols and `undefined` are refused.
pub(crate) fn js_to_json(value: &JsValue, what: &str) -> Result<Value, Error> {
    let text = js_sys::JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| input(what, "is not representable as JSON".into()))?;
    serde_json::from_str(&text).map_err(|e| input(what, format!("is not JSON: {e}")))
}

/// The core error as a JS `Error` named `SessionError` with `code`, `status`,
/// `message` and `detail` (the serde form of the error kind).
pub fn js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("SessionError");
    set(&err, "code", &JsValue::from_str(e.code()));
    set(&err, "status", &JsValue::from(e.status_hint()));
    let detail = serde_json::to_value(e).unwrap_or(Value::Null);
    set(&err, "detail", &json_to_js(&detail));
    err.into()
}

/// A round as `Uint8Array[][]`: one argv array per command, in reply order.
pub(crate) fn round_to_js(round: &Round) -> Array {
    round
        .commands()
        .iter()
        .map(|cmd| {
            cmd.args()
                .iter()
                .map(|arg| JsValue::from(Uint8Array::from(arg.as_slice())))
                .collect::<Array>()
        })
        .collect()
}

/// A round given back by JS (`Memory.executeRound`): argv as byte arrays or
/// strings.
pub(crate) fn round_from_js(value: &JsValue) -> Result<Round, Error> {
    let commands = value
        .dyn_ref::<Array>()
        .ok_or_else(|| usage("a round must be an array of argv arrays".into()))?;
    commands
        .iter()
        .map(|cmd| command_from_js(&cmd))
        .collect::<Result<Vec<_>, _>>()
        .map(Round)
}

/// One argv array of byte arrays or strings.
pub(crate) fn command_from_js(value: &JsValue) -> Result<Command, Error> {
    let args = value
        .dyn_ref::<Array>()
        .ok_or_else(|| usage("a command must be an array of arguments".into()))?;
    args.iter()
        .map(|arg| {
            bytes_from_js(&arg).ok_or_else(|| usage("an argument must be bytes or a string".into()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Command)
}

fn bytes_from_js(value: &JsValue) -> Option<Vec<u8>> {
    if let Some(s) = value.as_string() {
        return Some(s.into_bytes());
    }
    value.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec)
}

/// The replies of one round, one per command, in order.
pub(crate) fn replies_from_js(value: &JsValue) -> Result<Vec<Reply>, Error> {
    let replies = value
        .dyn_ref::<Array>()
        .ok_or_else(|| usage("replies must be an array, one per command".into()))?;
    replies.iter().map(|r| reply_from_js(&r, 0)).collect()
}

fn reply_from_js(value: &JsValue, depth: usize) -> Result<Reply, Error> {
    if depth > MAX_DEPTH {
        return Err(usage(format!("reply nested deeper than {MAX_DEPTH}")));
    }
    // The common shapes first (every check is a call out of the module):
    // bulk strings, then arrays of them.
    if let Some(bytes) = bytes_from_js(value) {
        return Ok(Reply::Bulk(bytes));
    }
    if let Some(items) = value.dyn_ref::<Array>() {
        return items
            .iter()
            .map(|item| reply_from_js(&item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Reply::Array);
    }
    if value.is_null() || value.is_undefined() {
        return Ok(Reply::Nil);
    }
    if let Some(n) = value.as_f64() {
        return if n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_SAFE {
            // Exact: an integer of magnitude below 2^53.
            #[allow(clippy::cast_possible_truncation)]
            Ok(Reply::Int(n as i64))
        } else {
            Err(usage(format!(
                "integer reply {n} is not a safe integer (pass a bigint)"
            )))
        };
    }
    if value.is_bigint() {
        return i64::try_from(value.clone())
            .map(Reply::Int)
            .map_err(|_| usage("bigint reply does not fit in 64 bits".into()));
    }
    if let Some(err) = value.dyn_ref::<js_sys::Error>() {
        return Ok(Reply::Error(String::from(err.message())));
    }
    if value.is_object() {
        for (key, make) in [
            ("error", Reply::Error as fn(String) -> Reply),
            ("simple", Reply::Simple),
        ] {
            let field = Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
            if let Some(text) = field.as_string() {
                return Ok(make(text));
            }
        }
    }
    Err(usage(
        "a reply must be null, an integer, a string, bytes, an array, an Error, {error} or {simple}"
            .into(),
    ))
}

/// A core reply in the JS reply shape (see the module table); the inverse of
/// [`replies_from_js`] up to bulk/simple and Error/`{error}`.
pub(crate) fn reply_to_js(reply: &Reply) -> JsValue {
    match reply {
        Reply::Nil => JsValue::NULL,
        Reply::Int(n) if n.unsigned_abs() <= 9_007_199_254_740_991 => {
            // Exact: magnitude below 2^53.
            #[allow(clippy::cast_precision_loss)]
            JsValue::from_f64(*n as f64)
        }
        Reply::Int(n) => JsValue::from(*n),
        Reply::Bulk(bytes) => Uint8Array::from(bytes.as_slice()).into(),
        Reply::Simple(text) => tagged("simple", text),
        Reply::Error(text) => tagged("error", text),
        Reply::Array(items) => items.iter().map(reply_to_js).collect::<Array>().into(),
    }
}

fn tagged(key: &str, text: &str) -> JsValue {
    let obj = Object::new();
    set(&obj, key, &JsValue::from_str(text));
    obj.into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn now_must_be_a_non_negative_safe_integer() {
        assert_eq!(
            now_from(1_700_000_000_000.0).unwrap(),
            UnixMillis(1_700_000_000_000)
        );
        assert_eq!(now_from(0.0).unwrap(), UnixMillis(0));
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 2f64.powi(53)] {
            assert_eq!(now_from(bad).unwrap_err().code(), "invalid_input", "{bad}");
        }
    }

    #[test]
    fn entropy_must_be_exactly_32_bytes() {
        assert_eq!(entropy_from(&[7; 32]).unwrap().0, [7; 32]);
        for len in [0, 16, 31, 33] {
            let e = entropy_from(&vec![0; len]).unwrap_err();
            assert_eq!((e.code(), e.status_hint()), ("invalid_input", 400));
        }
    }
}
