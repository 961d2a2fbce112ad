//! The packed wire form of rounds and replies: one byte buffer each way per
//! round, for hosts that reach the core across a boundary where every call
//! costs (the wasm-bindgen package in Node, the wasm-abi module under
//! wasmtime). One call per argument or per reply element was most of what a
//! request cost in Node; one buffer each way is one copy.
//!
//! The JSON form in [`crate::conformance`] stays the readable one for
//! vectors and tests; this one is for hot paths. Both carry the same
//! [`Round`] and [`Reply`] values, and [`decode_replies`] refuses anything
//! that is not exactly one well-formed encoding, with a typed usage error.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! round   := u32 commands, { u32 args, { u32 len, len bytes } }
//! replies := u32 count, count × reply
//! reply   := 0x00                          nil
//!          | 0x01 i64                      integer
//!          | 0x02 u32 len, len bytes       bulk string
//!          | 0x03 u32 len, len bytes       simple string (UTF-8)
//!          | 0x04 u32 len, len bytes       error reply (UTF-8)
//!          | 0x05 u32 count, count × reply array (RESP3 maps and sets flattened)
//! ```
//!
//! Arrays nest at most [`MAX_DEPTH`] deep (ours are two deep), so a hostile
//! buffer cannot exhaust the stack; a count larger than the bytes left is
//! refused before anything is allocated for it.

use crate::error::{Error, UsageError};
use crate::step::{Command, Reply, Round};

/// Deepest array nesting accepted in a reply buffer.
pub const MAX_DEPTH: usize = 16;

const NIL: u8 = 0;
const INT: u8 = 1;
const BULK: u8 = 2;
const SIMPLE: u8 = 3;
const ERROR: u8 = 4;
const ARRAY: u8 = 5;

/// Append `round` in the packed form to `out`.
pub fn encode_round(round: &Round, out: &mut Vec<u8>) {
    let size = 4 + round
        .commands()
        .iter()
        .map(|c| 4 + c.args().iter().map(|a| 4 + a.len()).sum::<usize>())
        .sum::<usize>();
    out.reserve(size);
    put_len(out, round.len());
    for command in round.commands() {
        put_len(out, command.args().len());
        for arg in command.args() {
            put_len(out, arg.len());
            out.extend_from_slice(arg);
        }
    }
}

/// A packed round read back (the in-memory backend of the JS package takes
/// rounds this way; tests check the encoding round-trips).
pub fn decode_round(bytes: &[u8]) -> Result<Round, Error> {
    let mut r = Reader { bytes, at: 0 };
    let count = r.count(4)?;
    let mut commands = Vec::with_capacity(count);
    for _ in 0..count {
        let args = r.count(4)?;
        let mut argv = Vec::with_capacity(args);
        for _ in 0..args {
            let len = r.count(1)?;
            argv.push(r.take(len)?.to_vec());
        }
        commands.push(Command(argv));
    }
    r.end()?;
    Ok(Round(commands))
}

/// Append `replies` (one round's) in the packed form to `out`.
pub fn encode_replies(replies: &[Reply], out: &mut Vec<u8>) {
    put_len(out, replies.len());
    for reply in replies {
        encode_reply(reply, out);
    }
}

fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Nil => out.push(NIL),
        Reply::Int(n) => {
            out.push(INT);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Reply::Bulk(b) => put_bytes(out, BULK, b),
        Reply::Simple(s) => put_bytes(out, SIMPLE, s.as_bytes()),
        Reply::Error(s) => put_bytes(out, ERROR, s.as_bytes()),
        Reply::Array(items) => {
            out.push(ARRAY);
            put_len(out, items.len());
            for item in items {
                encode_reply(item, out);
            }
        }
    }
}

/// One round's replies from the packed form. Anything but exactly one
/// well-formed encoding (truncated, trailing bytes, unknown tag, too deep)
/// is a usage error: the host broke the loop contract.
pub fn decode_replies(bytes: &[u8]) -> Result<Vec<Reply>, Error> {
    let mut r = Reader { bytes, at: 0 };
    // Every reply takes at least its tag byte.
    let count = r.count(1)?;
    let mut replies = Vec::with_capacity(count);
    for _ in 0..count {
        replies.push(r.reply(0)?);
    }
    r.end()?;
    Ok(replies)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Rounds and replies are bounded far below 4 GiB (records have a size
    // limit; a wasm32 host cannot hold more anyway): saturate rather than wrap.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn malformed(why: String) -> Error {
    Error::Usage(UsageError(format!("packed buffer: {why}")))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let slice = end
            .and_then(|e| self.bytes.get(self.at..e))
            .ok_or_else(|| {
                malformed(format!(
                    "truncated: {n} bytes wanted at offset {} of {}",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        self.take(1)?
            .first()
            .copied()
            .ok_or_else(|| malformed("truncated".into()))
    }

    /// A u32 count of items that each take at least `min_size` bytes;
    /// refused when the buffer cannot hold that many.
    fn count(&mut self, min_size: usize) -> Result<usize, Error> {
        let raw = self.take(4)?;
        let n = <[u8; 4]>::try_from(raw)
            .map(u32::from_le_bytes)
            .map_err(|_| malformed("truncated length".into()))?;
        let n = usize::try_from(n).map_err(|_| malformed("length overflows".into()))?;
        let left = self.bytes.len() - self.at.min(self.bytes.len());
        if n.saturating_mul(min_size) > left {
            return Err(malformed(format!(
                "count {n} does not fit the {left} bytes left"
            )));
        }
        Ok(n)
    }

    fn text(&mut self) -> Result<String, Error> {
        let len = self.count(1)?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn reply(&mut self, depth: usize) -> Result<Reply, Error> {
        Ok(match self.u8()? {
            NIL => Reply::Nil,
            INT => {
                let raw = self.take(8)?;
                let n = <[u8; 8]>::try_from(raw)
                    .map(i64::from_le_bytes)
                    .map_err(|_| malformed("truncated integer".into()))?;
                Reply::Int(n)
            }
            BULK => {
                let len = self.count(1)?;
                Reply::Bulk(self.take(len)?.to_vec())
            }
            SIMPLE => Reply::Simple(self.text()?),
            ERROR => Reply::Error(self.text()?),
            ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(malformed(format!("reply nested deeper than {MAX_DEPTH}")));
                }
                let count = self.count(1)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.reply(depth + 1)?);
                }
                Reply::Array(items)
            }
            tag => return Err(malformed(format!("unknown reply tag {tag}"))),
        })
    }

    fn end(&self) -> Result<(), Error> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} trailing bytes",
                self.bytes.len() - self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            Just(Reply::Nil),
            any::<i64>().prop_map(Reply::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
            ".{0,12}".prop_map(Reply::Simple),
            ".{0,12}".prop_map(Reply::Error),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    proptest! {
        #[test]
        fn replies_round_trip(replies in proptest::collection::vec(reply(), 0..6)) {
            let mut buf = Vec::new();
            encode_replies(&replies, &mut buf);
            prop_assert_eq!(decode_replies(&buf).unwrap(), replies);
        }

        #[test]
        fn rounds_round_trip(commands in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6), 0..5)) {
            let round = Round(commands.into_iter().map(Command).collect());
            let mut buf = Vec::new();
            encode_round(&round, &mut buf);
            prop_assert_eq!(decode_round(&buf).unwrap(), round);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Err(e) = decode_replies(&bytes) {
                prop_assert_eq!(e.code(), "usage");
            }
            let _ = decode_round(&bytes);
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let round = Round(vec![Command::new(["GET", "k"])]);
        let mut buf = Vec::new();
        encode_round(&round, &mut buf);
        assert_eq!(
            buf,
            [
                &1u32.to_le_bytes()[..],
                &2u32.to_le_bytes(),
                &3u32.to_le_bytes(),
                b"GET",
                &1u32.to_le_bytes(),
                b"k"
            ]
            .concat()
        );
        let mut buf = Vec::new();
        encode_replies(
            &[
                Reply::Int(-2),
                Reply::Array(vec![Reply::Nil, Reply::bulk("x")]),
            ],
            &mut buf,
        );
        assert_eq!(
            buf,
            [
                &2u32.to_le_bytes()[..],
                &[INT],
                &(-2i64).to_le_bytes(),
                &[ARRAY],
                &2u32.to_le_bytes(),
                &[NIL, BULK],
                &1u32.to_le_bytes(),
                b"x"
            ]
            .concat()
        );
    }

    #[test]
    fn malformed_buffers_are_usage_errors() {
        let cases: [&[u8]; 6] = [
            b"",
            &[1, 0, 0, 0],                   // one reply promised, none there
            &[1, 0, 0, 0, 9],                // unknown tag
            &[1, 0, 0, 0, 2, 5, 0, 0, 0, 1], // bulk shorter than its length
            &[0, 0, 0, 0, 0],                // trailing byte
            &[255, 255, 255, 255, 0],        // a count the buffer cannot hold
        ];
        for bytes in cases {
            let e = decode_replies(bytes).unwrap_err();
            assert_eq!(e.code(), "usage", "{bytes:?}");
            assert!(e.to_string().contains("packed buffer"), "{e}");
        }
        let mut deep = 1u32.to_le_bytes().to_vec();
        for _ in 0..=MAX_DEPTH {
            deep.push(ARRAY);
            deep.extend_from_slice(&1u32.to_le_bytes());
        }
        deep.push(NIL);
        assert!(
            decode_replies(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
    }
}
