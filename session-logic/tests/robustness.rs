//! Robustness: the ID parser, the reply decoder (every operation driven with
//! hostile replies), the record decoder and the config parser each take at
//! least 10^6 generated hostile inputs, with no panic and a typed result.
//! (The cookie parser's million-input run lives next to it in `cookie.rs`.)
//!
//! Inputs come from a small deterministic PRNG, so a failure reproduces
//! exactly. Every run is wrapped in `catch_unwind`: a panic is reported with
//! the input that caused it (up to a few distinct ones) instead of only the
//! first panic message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::Value;
use session_logic::config::IdFormat;
use session_logic::outcome::Absent;
use session_logic::scripts::Script;
use session_logic::session::Status;
use session_logic::step::BackendFailure;
use session_logic::{
    Command, Config, Engine, Entropy, Error, Op, Outcome, Reply, Session, SessionId, Step,
    UnixMillis, UserId,
};

const MILLION: usize = 1_000_000;
const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// Every `Error::code()` the crate documents.
const STABLE_CODES: &[&str] = &[
    "config",
    "backend_timeout",
    "backend_unavailable",
    "backend_noperm",
    "backend_error",
    "backend_not_durable",
    "backend_collision",
    "decode",
    "too_large",
    "invalid_input",
    "usage",
];

// ---- randomness -------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free test randomness.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

/// Panics caught while running inputs, one reproducer per distinct message.
struct Panics {
    found: Vec<String>,
    messages: BTreeSet<String>,
}

impl Panics {
    fn new() -> Panics {
        Panics {
            found: Vec::new(),
            messages: BTreeSet::new(),
        }
    }

    /// Runs one input under `catch_unwind`; on a panic, re-runs it from the
    /// same PRNG state with tracing on and keeps the message and the trace.
    /// Returns false once enough distinct panics were collected to stop early.
    fn run(&mut self, rng: &mut Rng, mut body: impl FnMut(&mut Rng, &mut Trace)) -> bool {
        let start = *rng;
        let mut quiet = Trace {
            on: false,
            lines: Vec::new(),
        };
        if catch_unwind(AssertUnwindSafe(|| body(rng, &mut quiet))).is_ok() {
            return true;
        }
        let mut again = start;
        let mut trace = Trace {
            on: true,
            lines: Vec::new(),
        };
        let payload = catch_unwind(AssertUnwindSafe(|| body(&mut again, &mut trace)));
        let message = match payload {
            Ok(()) => "panicked once, not on the traced re-run (nondeterminism?)".to_owned(),
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".to_owned()),
        };
        // One reproducer per distinct message, ignoring the numbers in it.
        let key: String = message
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(300)
            .collect();
        if self.messages.insert(key) {
            self.found.push(format!(
                "PANIC: {message}\n  input:\n    {}",
                trace.lines.join("\n    ")
            ));
        }
        *rng = again;
        self.found.len() < 8
    }

    fn assert_none(&self, what: &str) {
        assert!(
            self.found.is_empty(),
            "{what}: {} distinct panic(s):\n\n{}",
            self.found.len(),
            self.found.join("\n\n")
        );
    }
}

/// What a failing input looked like, collected only on the traced re-run.
struct Trace {
    on: bool,
    lines: Vec<String>,
}

impl Trace {
    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.on {
            self.lines.push(line());
        }
    }
}

/// A reply as text, bulk strings shown lossily, for traces.
fn show(r: &Reply) -> String {
    match r {
        Reply::Bulk(b) => match std::str::from_utf8(b) {
            Ok(t) if t.len() > 80 => {
                let cut = (0..=80).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                format!("{:?}…({} bytes)", &t[..cut], t.len())
            }
            Ok(t) => format!("{t:?}"),
            Err(_) => format!("bytes{b:?}"),
        },
        Reply::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// Which of the two test configs an engine runs.
fn label(engine: &Engine) -> &'static str {
    if *engine.config() == Config::default() {
        "Config::default()"
    } else {
        "rich_config()"
    }
}

fn show_all(rs: &[Reply]) -> String {
    show(&Reply::Array(rs.to_vec()))
}

// ---- base64, by hand (an oracle independent of the crate's engine) ----------

const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const STD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn alphabet(format: IdFormat) -> &'static [u8; 64] {
    match format {
        IdFormat::Base64url | IdFormat::Base64url128 => URL_ALPHABET,
        IdFormat::Base64Padded => STD_ALPHABET,
    }
}

/// (text length, data characters, bytes, unused trailing bits) of a format.
fn spec(format: IdFormat) -> (usize, usize, usize, u32) {
    match format {
        IdFormat::Base64url => (43, 43, 32, 2),
        IdFormat::Base64Padded => (44, 43, 32, 2),
        IdFormat::Base64url128 => (22, 22, 16, 4),
    }
}

/// Random bytes of the size `format` carries.
fn id_bytes(rng: &mut Rng, format: IdFormat) -> Vec<u8> {
    let mut b = rng.bytes32().to_vec();
    b.truncate(spec(format).2);
    b
}

/// Base64 of `bytes` in `format`'s alphabet, padded for `Base64Padded`.
fn encode(bytes: &[u8], format: IdFormat) -> String {
    let alphabet = alphabet(format);
    let mut out = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if format == IdFormat::Base64Padded {
                out.push('=');
            }
        }
    }
    out
}

/// The specification of a session ID: exactly 43 characters of the format's
/// alphabet (plus one '=' when padded) carrying 32 bytes, with the 2 unused
/// trailing bits zero; or 22 characters carrying 16 bytes with 4 zero bits
/// for the 128-bit format. Returns the bytes.
fn reference_decode(text: &str, format: IdFormat) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let (len, data, nbytes, trailing) = spec(format);
    if b.len() != len || (format == IdFormat::Base64Padded && b[43] != b'=') {
        return None;
    }
    let alphabet = alphabet(format);
    let (mut out, mut acc, mut bits, mut at) = (vec![0u8; nbytes], 0u32, 0u32, 0usize);
    for &c in &b[..data] {
        let v = alphabet.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[at] = (acc >> bits) as u8;
            at += 1;
            acc &= (1 << bits) - 1;
        }
    }
    (at == nbytes && bits == trailing && acc == 0).then_some(out)
}

// ---- 1. the ID parser -------------------------------------------------------

/// Characters an attacker (or a broken proxy) might put in an ID.
const ID_CHARS: &[char] = &[
    'A', 'Z', 'a', 'z', '0', '9', 'Q', 'g', 'w', 'E', 'B', 'F', '-', '_', '+', '/', '=', '=', ' ',
    '\t', '\n', '\0', '\u{7f}', '.', '%', '"', ';', ',', '\\', 'é', '💥', '\u{fffd}', '\u{ff21}',
    '\u{200b}', '\u{85}', '\u{a0}', '\u{feff}',
];

fn random_id_char(rng: &mut Rng) -> char {
    if rng.one_in(3) {
        rng.pick(ID_CHARS)
    } else {
        let alphabet = if rng.one_in(4) {
            STD_ALPHABET
        } else {
            URL_ALPHABET
        };
        char::from(alphabet[rng.below(64)])
    }
}

/// One candidate ID: valid, near-valid or garbage, mostly 40..=47 chars.
fn hostile_id(rng: &mut Rng, out: &mut String) {
    out.clear();
    let format = match rng.below(3) {
        0 => IdFormat::Base64url,
        1 => IdFormat::Base64Padded,
        _ => IdFormat::Base64url128,
    };
    match rng.below(16) {
        // A minted ID, untouched.
        0..=2 => out.push_str(&encode(&id_bytes(rng, format), format)),
        // A minted ID with a few mutations.
        3..=9 => {
            let bytes = id_bytes(rng, format);
            let mut chars: Vec<char> = encode(&bytes, format).chars().collect();
            for _ in 0..=rng.below(3) {
                let at = rng.below(chars.len().max(1));
                match rng.below(9) {
                    0 | 1 => {
                        if let Some(c) = chars.get_mut(at) {
                            *c = random_id_char(rng);
                        }
                    }
                    2 => chars.insert(at, random_id_char(rng)),
                    3 => {
                        if !chars.is_empty() {
                            chars.remove(at);
                        }
                    }
                    // The last data character: flips trailing bits (non-canonical).
                    4 | 5 => {
                        let last = if format == IdFormat::Base64Padded {
                            42
                        } else {
                            chars.len().saturating_sub(1)
                        };
                        if let Some(c) = chars.get_mut(last) {
                            *c = char::from(alphabet(format)[rng.below(64)]);
                        }
                    }
                    // The other alphabet.
                    6 => {
                        for c in &mut chars {
                            *c = match *c {
                                '-' => '+',
                                '_' => '/',
                                '+' => '-',
                                '/' => '_',
                                other => other,
                            };
                        }
                    }
                    7 => chars.push('='),
                    _ => {
                        if let Some(c) = chars.get_mut(at) {
                            *c = if c.is_ascii_uppercase() {
                                c.to_ascii_lowercase()
                            } else {
                                c.to_ascii_uppercase()
                            };
                        }
                    }
                }
            }
            out.extend(chars);
        }
        // Random text of about the right length.
        10..=13 => {
            for _ in 0..40 + rng.below(8) {
                out.push(random_id_char(rng));
            }
        }
        // Multi-byte characters that make the *byte* length exactly right.
        14 => {
            let target = 42 + rng.below(4);
            while out.len() < target {
                let c = random_id_char(rng);
                if out.len() + c.len_utf8() <= target {
                    out.push(c);
                } else {
                    out.push('A');
                }
            }
        }
        // Anything from empty to long.
        _ => {
            for _ in 0..rng.below(90) {
                out.push(random_id_char(rng));
            }
        }
    }
}

#[test]
fn id_parser_survives_a_million_hostile_inputs() {
    let mut rng = Rng(0x243f_6a88_85a3_08d3);
    let mut panics = Panics::new();
    let mut text = String::new();
    let (mut accepted, mut rejected_near_miss) = ([0usize; 3], 0usize);
    for _ in 0..MILLION {
        let keep_going = panics.run(&mut rng, |rng, trace| {
            hostile_id(rng, &mut text);
            trace.log(|| format!("SessionId::parse({text:?}, …)"));
            for (i, format) in [
                IdFormat::Base64url,
                IdFormat::Base64Padded,
                IdFormat::Base64url128,
            ]
            .into_iter()
            .enumerate()
            {
                let got = SessionId::parse(&text, format);
                let want = reference_decode(&text, format);
                assert_eq!(got.is_some(), want.is_some(), "{format:?} {text:?}");
                if let (Some(id), Some(bytes)) = (got, want) {
                    assert_eq!(id.expose(), text);
                    assert_eq!(text.len(), spec(format).0);
                    assert_eq!(
                        encode(&bytes, format),
                        text,
                        "re-encoding the decoded bytes"
                    );
                    accepted[i] += 1;
                } else if (42..=45).contains(&text.len()) {
                    rejected_near_miss += 1;
                }
            }
        });
        if !keep_going {
            break;
        }
    }
    panics.assert_none("ID parser");
    // The generator must reach both sides of the decision for both formats.
    assert!(
        accepted.iter().all(|&n| n > 50_000),
        "accepted {accepted:?}"
    );
    assert!(
        rejected_near_miss > 500_000,
        "near misses {rejected_near_miss}"
    );
}

// ---- records ----------------------------------------------------------------

/// Field names and values of a record before it becomes a reply.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

const JSON_VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "1.5",
    "-0",
    "1e308",
    "1e-308",
    "12345678901234567890123",
    "true",
    "false",
    "null",
    "\"\"",
    "\"apple\"",
    "\"\\u00e9\\n\\\"\"",
    "\"\\ud83d\\ude00\"",
    "[]",
    "{}",
    "[1,2,3]",
    "{\"a\":{\"b\":[null,true]}}",
    "\"é💥\"",
    " 1 ",
    "\n[1]\n",
    "{\"$v\":\"2\"}",
];

const NOT_JSON: &[&str] = &[
    "",
    "{",
    "[1,",
    "undefined",
    "NaN",
    "Infinity",
    "'a'",
    "1 2",
    "{\"a\" 1}",
    "01",
    "+1",
    ".5",
    "\"\\ud800\"",
    "\"\\x41\"",
    "tru",
    "[1,]",
    "{\"a\":1,}",
    "\u{0}",
    "\"\u{1}\"",
    "1e999",
    "-",
    "\u{feff}1",
];

const DATA_KEYS: &[&str] = &[
    "cart",
    "n",
    "prefs",
    "é",
    "a b",
    "x",
    "0",
    "__proto__",
    "k\u{0}",
    "💥",
    "v",
    "created",
];

const BAD_NUMBERS: &[&str] = &[
    "",
    "-1",
    "1.5",
    "1e3",
    " 1",
    "1 ",
    "+1",
    "0x10",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "00000000000000000001",
    "000000000000000000001",
    "١٢٣",
    "１",
    "-0",
    "0",
    "NaN",
    "1_000",
];

const BAD_USERS: &[&str] = &["", "a\nb", "\u{0}", "\u{7f}", "tab\there", "\u{85}x"];

const META_NAMES: &[&str] = &[
    "$v",
    "$created",
    "$deadline",
    "$touch",
    "$rev",
    "$user",
    "$auth_at",
    "$bind",
    "$rotated",
];

fn number_text(rng: &mut Rng, good: u64) -> String {
    if rng.one_in(3) {
        rng.pick(BAD_NUMBERS).to_owned()
    } else {
        good.to_string()
    }
}

/// A record as session-logic writes it, with times around `NOW` so that some
/// are live and some expired under `config`.
fn valid_record(rng: &mut Rng, config: &Config) -> Pairs {
    let (idle, life) = (config.idle_timeout_ms, config.absolute_lifetime_ms);
    let created = NOW.0 - rng.next() % (life + life / 4);
    let deadline = created + life;
    let touch = NOW.0.saturating_sub(rng.next() % (2 * idle)).max(created);
    let mut pairs: Pairs = vec![
        (b"$v".to_vec(), b"1".to_vec()),
        (b"$created".to_vec(), created.to_string().into_bytes()),
        (b"$deadline".to_vec(), deadline.to_string().into_bytes()),
        (b"$touch".to_vec(), touch.to_string().into_bytes()),
        (
            b"$rev".to_vec(),
            (1 + rng.below(1000)).to_string().into_bytes(),
        ),
    ];
    if rng.one_in(2) {
        pairs.push((
            b"$user".to_vec(),
            rng.pick(&["alice", "bob@example.com", "{tag}:*", "é", "u%41"])
                .as_bytes()
                .to_vec(),
        ));
        pairs.push((b"$auth_at".to_vec(), created.to_string().into_bytes()));
    }
    if rng.one_in(4) {
        pairs.push((b"$bind".to_vec(), b"q1w2e3r4t5y6u7i8o9p0as".to_vec()));
    }
    let mut used = BTreeSet::new();
    for _ in 0..rng.below(4) {
        let k = rng.pick(DATA_KEYS);
        if used.insert(k) {
            pairs.push((
                k.as_bytes().to_vec(),
                rng.pick(JSON_VALUES).as_bytes().to_vec(),
            ));
        }
    }
    pairs
}

/// Rarely, something big: deep JSON or a long string.
fn big_value(rng: &mut Rng) -> Vec<u8> {
    let n = rng.pick(&[127, 128, 129, 500, 5_000, 50_000]);
    match rng.below(3) {
        0 => format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes(),
        1 => "{\"a\":".repeat(n).into_bytes(),
        _ => format!("\"{}\"", "x".repeat(n)).into_bytes(),
    }
}

/// One to four hostile changes to a record.
fn mutate_record(rng: &mut Rng, pairs: &mut Pairs) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(pairs.len().max(1));
        match rng.below(15) {
            0 => {
                if !pairs.is_empty() {
                    pairs.remove(at);
                }
            }
            1 => {
                if let Some(p) = pairs.get(at).cloned() {
                    let v = if rng.one_in(2) {
                        p.1.clone()
                    } else {
                        b"2".to_vec()
                    };
                    pairs.insert(rng.below(pairs.len() + 1), (p.0, v));
                }
            }
            2 | 3 => {
                let name = rng.pick(&["$created", "$deadline", "$touch", "$rev", "$auth_at"]);
                let good = rng.next();
                let value = number_text(rng, good);
                set_field(pairs, name, value.into_bytes());
            }
            4 => {
                let v = rng.pick(&["2", "01", "1 ", "", "v1", "1.0", "0", "١"]);
                set_field(pairs, "$v", v.as_bytes().to_vec());
            }
            5 => {
                let until = if rng.one_in(2) {
                    (NOW.0 + rng.below(10_000) as u64 - 5_000).to_string()
                } else {
                    number_text(rng, NOW.0)
                };
                set_field(pairs, "$rotated", until.into_bytes());
            }
            6 => {
                let k = rng.pick(DATA_KEYS);
                let v = if rng.one_in(50) {
                    big_value(rng)
                } else {
                    rng.pick(NOT_JSON).as_bytes().to_vec()
                };
                set_field(pairs, k, v);
            }
            7 => {
                // Non-UTF-8 in a name or a value.
                if let Some(p) = pairs.get_mut(at) {
                    let target = if rng.one_in(2) { &mut p.0 } else { &mut p.1 };
                    let i = rng.below(target.len() + 1);
                    target.insert(i, rng.pick(&[0xff, 0xc3, 0x80, 0xed, 0xf4]));
                }
            }
            8 => set_field(pairs, "$user", rng.pick(BAD_USERS).as_bytes().to_vec()),
            9 => set_field(pairs, "$user", "u".repeat(250 + rng.below(10)).into_bytes()),
            10 => {
                let name = rng.pick(&[
                    "",
                    "$",
                    "$future",
                    "$V",
                    "$v ",
                    " $v",
                    "$created\u{0}",
                    "\u{0}",
                ]);
                pairs.push((
                    name.as_bytes().to_vec(),
                    rng.pick(JSON_VALUES).as_bytes().to_vec(),
                ));
            }
            11 => {
                for i in (1..pairs.len()).rev() {
                    pairs.swap(i, rng.below(i + 1));
                }
            }
            12 => {
                if let Some(p) = pairs.get_mut(at) {
                    p.1 = random_bytes(rng, 24);
                }
            }
            13 => set_field(
                pairs,
                rng.pick(META_NAMES),
                rng.pick(&[&b"18446744073709551615"[..], b"0", b""])
                    .to_vec(),
            ),
            _ => {
                // Times that make the record expired or far in the future.
                let name = rng.pick(&["$touch", "$deadline", "$created"]);
                let v = rng.pick(&[0, 1, NOW.0 - 1, NOW.0, NOW.0 + 1, u64::MAX, u64::MAX - 1]);
                set_field(pairs, name, v.to_string().into_bytes());
            }
        }
    }
}

fn set_field(pairs: &mut Pairs, name: &str, value: Vec<u8>) {
    match pairs.iter_mut().find(|(f, _)| f == name.as_bytes()) {
        Some(p) => p.1 = value,
        None => pairs.push((name.as_bytes().to_vec(), value)),
    }
}

fn random_bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    (0..rng.below(max + 1)).map(|_| rng.next() as u8).collect()
}

fn pairs_reply(pairs: Pairs) -> Reply {
    Reply::Array(
        pairs
            .into_iter()
            .flat_map(|(f, v)| [Reply::Bulk(f), Reply::Bulk(v)])
            .collect(),
    )
}

/// A record reply as a hostile store might hold it: mostly well-formed records
/// with mutations, sometimes broken at the item level or not an array at all.
fn hostile_record(rng: &mut Rng, config: &Config) -> Reply {
    let mut pairs = valid_record(rng, config);
    if !rng.one_in(8) {
        mutate_record(rng, &mut pairs);
    }
    let Reply::Array(mut items) = pairs_reply(pairs) else {
        unreachable!()
    };
    match rng.below(24) {
        0 if !items.is_empty() => {
            items.remove(rng.below(items.len()));
        }
        1 => items.push(Reply::bulk("dangling")),
        2 | 3 if !items.is_empty() => {
            let at = rng.below(items.len());
            items[at] = random_reply(rng, 1, &mut 6);
        }
        4 => items.clear(),
        5 => {
            return rng.pick(&[
                Reply::Nil,
                Reply::Int(0),
                Reply::Int(-1),
                Reply::Simple("OK".into()),
                Reply::bulk("$v"),
                Reply::Error(
                    "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
                ),
                Reply::Error("ERR something".into()),
                Reply::Error("NOPERM no".into()),
                Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
                Reply::Array(vec![Reply::Array(items)]),
            ]);
        }
        _ => {}
    }
    Reply::Array(items)
}

/// What the documented record format says a load reply means.
#[derive(Debug, PartialEq)]
enum Want {
    Absent,
    Rotated(u64),
    Live {
        created: u64,
        deadline: u64,
        touch: u64,
        rev: u64,
        user: Option<String>,
        auth_at: Option<u64>,
        bind: Option<String>,
        data: BTreeMap<String, Value>,
    },
    Decode,
    /// An error reply other than WRONGTYPE: a backend error with this code.
    Backend(&'static str),
}

fn strict_number(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The record format (record.rs's table), written out independently.
fn reference_record(reply: &Reply) -> Want {
    let items = match reply {
        Reply::Array(items) => items,
        Reply::Error(e) if e.starts_with("WRONGTYPE") => return Want::Decode,
        Reply::Error(e) if e.starts_with("NOPERM") => return Want::Backend("backend_noperm"),
        Reply::Error(_) => return Want::Backend("backend_error"),
        _ => return Want::Decode,
    };
    if items.is_empty() {
        return Want::Absent;
    }
    if items.len() % 2 != 0 {
        return Want::Decode;
    }
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in items.chunks(2) {
        let (Reply::Bulk(f), Reply::Bulk(v)) = (&pair[0], &pair[1]) else {
            return Want::Decode;
        };
        let (Ok(f), Ok(v)) = (std::str::from_utf8(f), std::str::from_utf8(v)) else {
            return Want::Decode;
        };
        if fields.insert(f, v).is_some() {
            return Want::Decode;
        }
    }
    if let Some(r) = fields.get("$rotated") {
        return strict_number(r).map_or(Want::Decode, Want::Rotated);
    }
    if fields.get("$v") != Some(&"1") {
        return Want::Decode;
    }
    let num = |n: &str| fields.get(n).and_then(|v| strict_number(v));
    let (Some(created), Some(deadline), Some(touch), Some(rev)) = (
        num("$created"),
        num("$deadline"),
        num("$touch"),
        num("$rev"),
    ) else {
        return Want::Decode;
    };
    let user = fields.get("$user").map(|u| u.to_string());
    if user
        .as_deref()
        .is_some_and(|u| u.is_empty() || u.len() > 256 || u.chars().any(char::is_control))
    {
        return Want::Decode;
    }
    let auth_at = match fields.get("$auth_at") {
        Some(a) => match strict_number(a) {
            Some(n) => Some(n),
            None => return Want::Decode,
        },
        None => None,
    };
    let mut data = BTreeMap::new();
    for (f, v) in &fields {
        if f.starts_with('$') {
            continue;
        }
        if f.is_empty() {
            return Want::Decode;
        }
        let Ok(value) = serde_json::from_str::<Value>(v) else {
            return Want::Decode;
        };
        data.insert((*f).to_owned(), value);
    }
    let bind = fields.get("$bind").map(|b| b.to_string());
    Want::Live {
        created,
        deadline,
        touch,
        rev,
        user,
        auth_at,
        bind,
        data,
    }
}

/// Check a load outcome against the reference reading of the record.
fn check_load(want: &Want, got: &Result<Outcome, Error>, config: &Config, id: &SessionId) {
    let now = NOW.0;
    match (want, got) {
        (Want::Decode, Err(e)) => assert_eq!(e.code(), "decode", "{e}"),
        (Want::Backend(code), Err(e)) => assert_eq!(e.code(), *code, "{e}"),
        (
            Want::Absent,
            Ok(Outcome::None {
                reason: Absent::Unknown,
                ..
            }),
        ) => {}
        (Want::Rotated(until), Ok(Outcome::Rotated(s))) if now < *until => {
            assert_eq!(s.status(), Status::Rotated);
            assert!(s.data().is_empty());
        }
        (
            Want::Rotated(until),
            Ok(Outcome::None {
                reason: Absent::Unknown,
                ..
            }),
        ) if now >= *until => {}
        (
            Want::Live {
                touch, deadline, ..
            },
            Ok(Outcome::Expired(s)),
        ) => {
            assert!(
                now >= touch.saturating_add(config.idle_timeout_ms).min(*deadline),
                "expired too early"
            );
            assert!(s.data().is_empty() && s.id().is_none());
        }
        (
            Want::Live {
                created,
                deadline,
                touch,
                rev,
                user,
                auth_at,
                bind,
                data,
            },
            Ok(Outcome::Loaded(s)),
        ) => {
            assert!(
                now < touch.saturating_add(config.idle_timeout_ms).min(*deadline),
                "loaded past its expiry"
            );
            assert_eq!(s.status(), Status::Live);
            assert_eq!(s.id(), Some(id));
            assert_eq!(s.data(), data);
            assert_eq!(s.user().map(UserId::as_str), user.as_deref());
            assert_eq!(s.auth_at().map(|a| a.0), *auth_at);
            let meta = s.meta().expect("a loaded session has metadata");
            assert_eq!(
                (meta.created.0, meta.deadline.0, meta.rev),
                (*created, *deadline, *rev)
            );
            let touched = if now.saturating_sub(*touch) >= config.touch_interval_ms && now > *touch
            {
                now
            } else {
                *touch
            };
            assert_eq!(meta.touch.0, touched);
            assert_eq!(meta.binding, *bind);
            // No client fingerprint is ever given here, so under a binding
            // policy any stored binding mismatches; with binding off, none does.
            let binding_on = config.client_binding != session_logic::config::BindingPolicy::Off;
            assert_eq!(s.binding_mismatch(), binding_on && bind.is_some());
            let due = config
                .rotate_every_ms
                .is_some_and(|every| now.saturating_sub(*created) >= every);
            assert_eq!(s.rotation_due(), due);
        }
        (want, got) => panic!("record read as {want:?} but load gave {got:?}"),
    }
}

/// Drive a load op of `cookie` against one reply, following a NOSCRIPT
/// fallback with `second`. Returns the result and what `judge` made of the
/// reply that decided it.
fn load_with<W>(
    engine: &Engine,
    cookie: &str,
    first: Reply,
    second: impl FnOnce() -> Reply,
    judge: impl Fn(&Reply) -> W,
) -> (Result<Outcome, Error>, W) {
    let mut op = engine.load(Some(cookie), None, NOW);
    let Step::Round(round) = op.poll() else {
        panic!("a well-formed ID must cost one round")
    };
    assert_eq!(round.len(), 1);
    assert_eq!(round.commands()[0].name(), b"EVALSHA");
    let noscript = matches!(&first, Reply::Error(e) if e.starts_with("NOSCRIPT"));
    let mut want = judge(&first);
    op.handle_replies(vec![first]);
    if noscript {
        let Step::Round(fallback) = op.poll() else {
            panic!("NOSCRIPT must be resent as EVAL")
        };
        assert_eq!(fallback.len(), 1);
        assert_eq!(fallback.commands()[0].name(), b"EVAL");
        assert_eq!(
            fallback.commands()[0].args()[1],
            Script::Load.source().as_bytes()
        );
        assert_eq!(
            fallback.commands()[0].args()[2..],
            round.commands()[0].args()[2..]
        );
        let decided_by = second();
        want = judge(&decided_by);
        op.handle_replies(vec![decided_by]);
    }
    match op.poll() {
        Step::Done(result) => (result, want),
        Step::Round(r) => panic!("load wanted another round: {r:?}"),
    }
}

/// A config exercising binding and rotation (not the defaults).
fn rich_config() -> Config {
    Config::from_json(
        r#"{"idle_timeout_ms": 600000, "absolute_lifetime_ms": 3600000, "touch_interval_ms": 30000,
            "rotate_every_ms": 60000, "client_binding": "report", "max_sessions_per_user": 3,
            "durable_revocation": {"replicas": 2, "timeout_ms": 50}}"#,
    )
    .unwrap()
}

#[test]
fn record_decoder_survives_a_million_hostile_records() {
    let mut rng = Rng(0x1319_8a2e_0370_7344);
    let engines = [
        Engine::new(Config::default()).unwrap(),
        Engine::new(rich_config()).unwrap(),
    ];
    // A few IDs, parsed once: the load op parses its cookie anyway.
    let ids: Vec<(SessionId, String)> = (0..16)
        .map(|_| {
            let text = encode(&rng.bytes32(), IdFormat::Base64url);
            (
                SessionId::parse(&text, IdFormat::Base64url).unwrap(),
                format!("sid={text}"),
            )
        })
        .collect();
    let mut panics = Panics::new();
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut fed = 0usize;
    for i in 0..MILLION {
        let engine = &engines[i % 5 / 4];
        let (id, cookie) = &ids[i % ids.len()];
        let keep_going = panics.run(&mut rng, |rng, trace| {
            let config = engine.config();
            let first = hostile_record(rng, config);
            trace.log(|| {
                format!(
                    "engine {}, load({cookie}) replies {}",
                    label(engine),
                    show(&first)
                )
            });
            let second = || {
                let r = hostile_record(rng, config);
                trace.log(|| format!("after NOSCRIPT: {}", show(&r)));
                r
            };
            let (got, want) = load_with(engine, cookie, first, second, reference_record);
            fed += 1;
            check_load(&want, &got, config, id);
            let name = match &got {
                Ok(o) => o.name(),
                Err(e) => e.code(),
            };
            *seen.entry(name).or_default() += 1;
        });
        if !keep_going {
            break;
        }
    }
    panics.assert_none("record decoder");
    assert!(fed >= MILLION, "fed {fed}");
    eprintln!("record outcomes: {seen:?}");
    for (what, min) in [
        ("loaded", 50_000),
        ("expired", 20_000),
        ("none", 10_000),
        ("rotated", 5_000),
        ("decode", 300_000),
        ("backend_error", 1_000),
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= min,
            "{what}: {seen:?}"
        );
    }
}

// ---- 2. the reply decoder: every operation under hostile replies ------------

const ERRORS: &[&str] = &[
    "NOSCRIPT No matching script. Please use EVAL.",
    "NOSCRIPT",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "NOPERM this user has no permissions to access one of the keys",
    "ERR",
    "",
    " ",
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "noscript lowercase",
    "MOVED 3999 127.0.0.1:6381",
    "ERR \u{0}\u{fffd}",
];

const SPECIAL_INTS: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -2,
    -1,
    0,
    1,
    2,
    3,
    i64::MAX - 1,
    i64::MAX,
    1_700_000_000_000,
    4_294_967_296,
];

const FIELD_NAMES: &[&str] = &[
    "$v",
    "$created",
    "$deadline",
    "$touch",
    "$rev",
    "$user",
    "$auth_at",
    "$bind",
    "$rotated",
    "$",
    "cart",
    "",
];

const JSONISH: &[&str] = &[
    "{}",
    "[]",
    "null",
    "\"x\"",
    "{\"a\":[1,{\"b\":null}]}",
    "[[[[[[",
    "{\"a\":",
    "\"\\ud800\"",
    "NaN",
    "1e999",
];

fn random_bulk(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 | 1 => random_bytes(rng, 24),
        2 => rng.pick(FIELD_NAMES).as_bytes().to_vec(),
        3 => rng.pick(JSONISH).as_bytes().to_vec(),
        4 => rng.pick(SPECIAL_INTS).to_string().into_bytes(),
        5 => rng.pick(BAD_NUMBERS).as_bytes().to_vec(),
        6 => encode(&rng.bytes32(), IdFormat::Base64url).into_bytes(),
        _ => Vec::new(),
    }
}

/// A random reply tree: depth ≤ 4, arrays ≤ 12 long, about `budget` nodes.
fn random_reply(rng: &mut Rng, depth: usize, budget: &mut usize) -> Reply {
    *budget = budget.saturating_sub(1);
    let kinds = if depth < 4 && *budget > 0 { 8 } else { 7 };
    match rng.below(kinds) {
        0 => Reply::Nil,
        1 => Reply::Int(if rng.one_in(2) {
            rng.pick(SPECIAL_INTS)
        } else {
            rng.next() as i64
        }),
        2 | 3 => Reply::Bulk(random_bulk(rng)),
        4 => Reply::Simple(
            rng.pick(&["OK", "QUEUED", "", "PONG", "1", "é\u{0}"])
                .to_owned(),
        ),
        5 | 6 => Reply::Error(rng.pick(ERRORS).to_owned()),
        _ => {
            let len = rng.below(13).min(*budget);
            Reply::Array(
                (0..len)
                    .map(|_| random_reply(rng, depth + 1, budget))
                    .collect(),
            )
        }
    }
}

/// Index members as our index script returns them, or junk.
fn members_reply(rng: &mut Rng, members: &[String]) -> Reply {
    let n = rng.below(6);
    Reply::Array(
        (0..n)
            .map(|_| match rng.below(12) {
                0 => Reply::Bulk(vec![0xff, 0xfe]),
                1 => random_reply(rng, 3, &mut 1),
                2 => Reply::bulk(""),
                _ => Reply::bulk(rng.pick(members)),
            })
            .collect(),
    )
}

/// An HMGET reply for the device list: created, touch, deadline, auth_at,
/// rotated, user.
fn hmget_reply(rng: &mut Rng) -> Reply {
    let num = |good: u64, rng: &mut Rng| match rng.below(10) {
        0 => Reply::Nil,
        1 => Reply::Bulk(rng.pick(BAD_NUMBERS).as_bytes().to_vec()),
        2 => Reply::Int(good as i64),
        _ => Reply::Bulk(good.to_string().into_bytes()),
    };
    let created = NOW.0 - rng.below(3_600_000) as u64;
    let mut items = vec![
        num(created, rng),
        num(NOW.0 - rng.below(1_200_000) as u64, rng),
        num(created + 86_400_000, rng),
        if rng.one_in(2) {
            Reply::Nil
        } else {
            num(created, rng)
        },
        if rng.one_in(8) {
            num(NOW.0, rng)
        } else {
            Reply::Nil
        },
        if rng.one_in(8) {
            random_reply(rng, 3, &mut 1)
        } else {
            Reply::bulk(rng.pick(&["alice", "alice", "bob"]))
        },
    ];
    if rng.one_in(16) {
        items.truncate(rng.below(6));
    }
    if rng.one_in(32) {
        items.push(Reply::Nil);
    }
    Reply::Array(items)
}

/// Which script an EVALSHA / EVAL command runs.
fn script_of(cmd: &Command) -> Option<Script> {
    let arg = cmd.args().get(1)?;
    match cmd.name() {
        b"EVALSHA" => Script::from_sha1(arg),
        b"EVAL" => Script::ALL
            .into_iter()
            .find(|s| s.source().as_bytes() == arg.as_slice()),
        _ => None,
    }
}

/// A reply a real Redis could plausibly give to `cmd` (so machines get past
/// their first check), with hostile edges.
fn plausible_reply(rng: &mut Rng, cmd: &Command, fx: &Fixture) -> Reply {
    let small = |rng: &mut Rng, xs: &[i64]| Reply::Int(rng.pick(xs));
    match (cmd.name(), script_of(cmd)) {
        (_, Some(Script::Load)) => hostile_record(rng, fx.engine.config()),
        (_, Some(Script::Save)) => small(rng, &[-1, 0, 1, 2, 7, i64::MAX, i64::MIN]),
        (_, Some(Script::Create)) => small(rng, &[1, 1, 1, 1, 0, 2, -1]),
        (_, Some(Script::Retire)) => small(rng, &[1, 1, 1, 0, -1, 2]),
        (_, Some(Script::Index)) => members_reply(rng, &fx.members),
        (b"DEL", _) => small(rng, &[0, 1, 1, 1, 2, -1, i64::MAX, i64::MIN]),
        (b"ZRANGE", _) => members_reply(rng, &fx.members),
        (b"ZREMRANGEBYSCORE" | b"ZREM", _) => small(rng, &[0, 1, 2, -1]),
        (b"HMGET", _) => hmget_reply(rng),
        (b"WAIT", _) => small(rng, &[0, 1, 2, 2, 3, -1]),
        _ => random_reply(rng, 0, &mut 40),
    }
}

fn hostile_reply(rng: &mut Rng, cmd: &Command, fx: &Fixture) -> Reply {
    match rng.below(16) {
        0..=7 => plausible_reply(rng, cmd, fx),
        8..=13 => random_reply(rng, 0, &mut 40),
        _ => Reply::Error(rng.pick(ERRORS).to_owned()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Load,
    LoadId,
    Save,
    Touch,
    Regenerate,
    Destroy,
    DestroyAll,
    List,
    DestroyOne,
}

const KINDS: &[Kind] = &[
    Kind::Load,
    Kind::Load,
    Kind::LoadId,
    Kind::Save,
    Kind::Save,
    Kind::Save,
    Kind::Touch,
    Kind::Regenerate,
    Kind::Regenerate,
    Kind::Destroy,
    Kind::DestroyAll,
    Kind::DestroyAll,
    Kind::List,
    Kind::List,
    Kind::DestroyOne,
];

/// Sessions and handles for one engine, made through the public API.
struct Fixture {
    engine: Engine,
    id: String,
    cookie: String,
    /// Sessions for save, regenerate and touch (dirty, new, clean; most of
    /// them cost at least one round).
    writable: Vec<(&'static str, Session)>,
    /// Live sessions (for destroy, keep and current).
    live: Vec<(&'static str, Session)>,
    members: Vec<String>,
    handles: Vec<String>,
    user: UserId,
}

fn record(pairs: &[(&str, String)]) -> Reply {
    Reply::Array(
        pairs
            .iter()
            .flat_map(|(f, v)| [Reply::bulk(*f), Reply::bulk(v.as_bytes())])
            .collect(),
    )
}

/// Run an op to the end with the replies `answer` gives for each round.
fn run_with(mut op: Op, mut answer: impl FnMut(&Command) -> Reply) -> Result<Outcome, Error> {
    for _ in 0..16 {
        match op.poll() {
            Step::Round(round) => {
                op.handle_replies(round.commands().iter().map(&mut answer).collect())
            }
            Step::Done(result) => return result,
        }
    }
    panic!("fixture op did not finish");
}

fn fixture(engine: Engine, rng: &mut Rng) -> Fixture {
    let id = encode(&rng.bytes32(), engine.config().id_format);
    let cookie = format!("{}={id}", engine.config().cookie.name);
    let user = UserId::new("alice").unwrap();
    let created = NOW.0 - 120_000;
    let load = |with_user: bool| -> Session {
        let mut pairs = vec![
            ("$v", "1".to_owned()),
            ("$created", created.to_string()),
            ("$deadline", (created + 3_000_000).to_string()),
            ("$touch", (NOW.0 - 1_000).to_string()),
            ("$rev", "4".to_owned()),
            ("cart", "[\"apple\",{\"qty\":2}]".to_owned()),
            ("theme", "\"dark\"".to_owned()),
        ];
        if with_user {
            pairs.push(("$user", "alice".to_owned()));
            pairs.push(("$auth_at", created.to_string()));
        }
        match run_with(engine.load(Some(&cookie), None, NOW), |_| record(&pairs)) {
            Ok(Outcome::Loaded(s)) => s,
            other => panic!("fixture load: {other:?}"),
        }
    };
    let (plain, with_user) = (load(false), load(true));
    assert_eq!(
        plain.rotation_due(),
        engine.config().rotate_every_ms.is_some()
    );
    let dirty = |mut s: Session, f: &dyn Fn(&mut Session)| {
        f(&mut s);
        s
    };
    let bob = UserId::new("bob").unwrap();
    let mut fresh = engine.new_session();
    fresh.insert("cart", serde_json::json!(["pear"])).unwrap();
    let mut fresh_user = fresh.clone();
    fresh_user.set_user(user.clone(), NOW);
    let writable = vec![
        (
            "live+insert",
            dirty(plain.clone(), &|s| {
                s.insert("n", serde_json::json!(1)).unwrap();
            }),
        ),
        (
            "live+remove",
            dirty(plain.clone(), &|s| {
                s.remove("cart");
            }),
        ),
        (
            "live+sign-in",
            dirty(plain.clone(), &|s| s.set_user(user.clone(), NOW)),
        ),
        (
            "user+switch",
            dirty(with_user.clone(), &|s| s.set_user(bob.clone(), NOW)),
        ),
        (
            "user+sign-out",
            dirty(with_user.clone(), &|s| s.clear_user()),
        ),
        ("user+clear", dirty(with_user.clone(), &|s| s.clear())),
        ("new+data", fresh),
        ("new+user", fresh_user),
        ("live", plain.clone()),
        ("user", with_user.clone()),
    ];
    // The member (and so the device handle) of each session: ask the engine.
    let members: Vec<String> = (0..3)
        .map(|_| {
            let id = SessionId::parse(
                &encode(&rng.bytes32(), engine.config().id_format),
                engine.config().id_format,
            )
            .unwrap();
            let key = engine.keyspace().session_key(&id);
            key[engine.keyspace().prefix().len()..].to_owned()
        })
        .chain(std::iter::once(
            engine.keyspace().session_key(with_user.id().unwrap())
                [engine.keyspace().prefix().len()..]
                .to_owned(),
        ))
        .collect();
    let zrange = Reply::Array(members.iter().map(|m| Reply::bulk(m.as_bytes())).collect());
    let device = vec![
        Reply::bulk(created.to_string()),
        Reply::bulk(NOW.0.to_string()),
        Reply::bulk((NOW.0 + 60_000).to_string()),
        Reply::Nil,
        Reply::Nil,
        Reply::bulk("alice"),
    ];
    let listed = run_with(
        engine.list_user_sessions(&user, None, NOW),
        |cmd| match cmd.name() {
            b"ZREMRANGEBYSCORE" => Reply::Int(0),
            b"ZRANGE" => zrange.clone(),
            _ => Reply::Array(device.clone()),
        },
    );
    let Ok(Outcome::Devices(devices)) = listed else {
        panic!("fixture list: {listed:?}")
    };
    assert_eq!(devices.len(), members.len());
    let handles = devices.into_iter().map(|d| d.handle).collect();
    Fixture {
        engine,
        id,
        cookie,
        writable,
        live: vec![("live", plain), ("user", with_user)],
        members,
        handles,
        user,
    }
}

/// What each operation may finish with.
fn outcome_fits(kind: Kind, o: &Outcome) -> bool {
    match kind {
        Kind::Load | Kind::LoadId => matches!(
            o,
            Outcome::Loaded(_) | Outcome::None { .. } | Outcome::Expired(_) | Outcome::Rotated(_)
        ),
        Kind::Save | Kind::Touch | Kind::Regenerate => matches!(
            o,
            Outcome::Saved { .. } | Outcome::Gone { .. } | Outcome::Rotated(_)
        ),
        Kind::Destroy | Kind::DestroyAll | Kind::DestroyOne => {
            matches!(o, Outcome::Destroyed { .. })
        }
        Kind::List => matches!(o, Outcome::Devices(_)),
    }
}

/// Tallies for the reply test.
#[derive(Default)]
struct Tally {
    /// Ops that were sent at least one round, i.e. that took hostile replies.
    ops: usize,
    replies: usize,
    fallbacks: usize,
    wrong_counts: usize,
    failures: usize,
    results: BTreeMap<(Kind, String), usize>,
    max_rounds: BTreeMap<Kind, usize>,
}

/// Build one op of `kind` on `fx`, describing it for the trace.
fn build_op(rng: &mut Rng, fx: &Fixture, kind: Kind, trace: &mut Trace) -> Op {
    let e = &fx.engine;
    let entropy = Entropy(rng.bytes32());
    let engine = label(e);
    match kind {
        Kind::Load => {
            let client = rng.one_in(2).then_some("Mozilla/5.0");
            trace.log(|| format!("{engine}: load(Some({:?}), {client:?})", fx.cookie));
            e.load(Some(&fx.cookie), client, NOW)
        }
        Kind::LoadId => {
            trace.log(|| format!("{engine}: load_id({:?})", fx.id));
            e.load_id(&fx.id, None, NOW)
        }
        Kind::Save | Kind::Touch | Kind::Regenerate => {
            let (name, s) = &fx.writable[rng.below(fx.writable.len())];
            trace.log(|| format!("{engine}: {kind:?}(session {name})"));
            let s = s.clone();
            match kind {
                Kind::Save => e.save(s, entropy, NOW),
                Kind::Touch => e.touch(s, NOW),
                _ => e.regenerate(s, entropy, NOW),
            }
        }
        Kind::Destroy => {
            let (name, s) = &fx.live[rng.below(fx.live.len())];
            trace.log(|| format!("{engine}: destroy(session {name})"));
            e.destroy(s.clone(), NOW)
        }
        Kind::DestroyAll => {
            let keep = rng.one_in(2).then_some(&fx.live[1].1);
            trace.log(|| {
                format!(
                    "{engine}: destroy_all_for_user(alice, keep {})",
                    keep.is_some()
                )
            });
            e.destroy_all_for_user(&fx.user, keep, NOW)
        }
        Kind::List => {
            let current = rng.one_in(2).then_some(&fx.live[1].1);
            trace.log(|| {
                format!(
                    "{engine}: list_user_sessions(alice, current {})",
                    current.is_some()
                )
            });
            e.list_user_sessions(&fx.user, current, NOW)
        }
        Kind::DestroyOne => {
            let handle = if rng.one_in(8) {
                "AAAAAAAAAAAAAAAAAAAAAA"
            } else {
                &fx.handles[rng.below(fx.handles.len())]
            };
            trace.log(|| format!("{engine}: destroy_user_session(alice, {handle:?})"));
            e.destroy_user_session(&fx.user, handle, NOW)
        }
    }
}

/// Rounds an op may legitimately take: three create attempts, each possibly
/// with a NOSCRIPT fallback, then an eviction round, with room to spare.
const MAX_ROUNDS: usize = 12;

/// Drive one op with hostile replies and check the host-loop contract.
fn drive(rng: &mut Rng, fx: &Fixture, kind: Kind, tally: &mut Tally, trace: &mut Trace) {
    let mut op = build_op(rng, fx, kind, trace);
    let mut fallback: Option<Vec<Command>> = None;
    for rounds in 0..=MAX_ROUNDS {
        let step = op.poll();
        if rng.one_in(16) {
            assert_eq!(op.poll(), step, "poll must be idempotent");
        }
        let round = match step {
            Step::Round(round) => round,
            Step::Done(result) => {
                assert!(
                    fallback.is_none(),
                    "NOSCRIPT replies were not resent as EVAL"
                );
                trace.log(|| format!("=> {result:?}"));
                match &result {
                    Ok(o) => {
                        assert!(outcome_fits(kind, o), "{kind:?} finished with {o:?}");
                        if let Outcome::Saved {
                            session,
                            cookie: Some(c),
                        } = o
                        {
                            let id = session
                                .id()
                                .expect("a saved session with a cookie has an id");
                            let cookie_name = &fx.engine.config().cookie.name;
                            assert!(
                                c.starts_with(&format!("{cookie_name}={};", id.expose())),
                                "{c}"
                            );
                            assert!(
                                SessionId::parse(id.expose(), fx.engine.config().id_format)
                                    .is_some()
                            );
                        }
                    }
                    Err(e) => {
                        assert!(STABLE_CODES.contains(&e.code()), "{e:?}");
                        assert_ne!(
                            e.code(),
                            "usage",
                            "a usage error although the host kept the contract: {e}"
                        );
                        assert!(!e.to_string().is_empty());
                    }
                }
                let name = match &result {
                    Ok(Outcome::Saved {
                        cookie: Some(_), ..
                    }) => "saved (new id)".to_owned(),
                    Ok(Outcome::Destroyed { count: 1.., .. }) => "destroyed (some)".to_owned(),
                    Ok(Outcome::Devices(d)) if !d.is_empty() => "devices (some)".to_owned(),
                    Ok(o) => o.name().to_owned(),
                    Err(e) => e.code().to_owned(),
                };
                *tally.results.entry((kind, name)).or_default() += 1;
                let most = tally.max_rounds.entry(kind).or_default();
                *most = (*most).max(rounds);
                // After the end, more input is a contract breach: usage error.
                if rng.one_in(16) {
                    op.handle_replies(vec![Reply::Nil]);
                    let Step::Done(Err(e)) = op.poll() else {
                        panic!("replies after Done must poison the op")
                    };
                    assert_eq!(e.code(), "usage");
                }
                return;
            }
        };
        if rounds == 0 {
            tally.ops += 1;
        }
        assert!(
            rounds < MAX_ROUNDS,
            "{kind:?} still wants round {} after {MAX_ROUNDS}: {round:?}",
            rounds + 1
        );
        assert!(!round.is_empty(), "empty round");
        trace.log(|| {
            format!(
                "round {rounds}: {:?}",
                round
                    .commands()
                    .iter()
                    .map(|c| String::from_utf8_lossy(c.name()))
                    .collect::<Vec<_>>()
            )
        });
        if matches!(kind, Kind::Load | Kind::LoadId) {
            assert_eq!(round.len(), 1, "load sends one command per round");
            assert!(rounds < 2, "load takes one round plus at most one fallback");
        }
        let in_fallback = fallback.is_some();
        if let Some(expected) = fallback.take() {
            assert_eq!(
                round.len(),
                expected.len(),
                "fallback resends exactly the NOSCRIPT commands"
            );
            for (got, sent) in round.commands().iter().zip(&expected) {
                assert_eq!(got.name(), b"EVAL");
                assert_eq!(
                    Some(got.args()[1].as_slice()),
                    script_of(sent).map(|s| s.source().as_bytes())
                );
                assert_eq!(got.args()[2..], sent.args()[2..]);
            }
            tally.fallbacks += 1;
        }
        match rng.below(64) {
            0 | 1 => {
                // A host that breaks the contract: wrong number of replies.
                let n = match rng.below(3) {
                    0 => 0,
                    1 => round.len() + 1 + rng.below(3),
                    _ => round.len() - 1,
                };
                let n = if n == round.len() { n + 1 } else { n };
                trace.log(|| format!("{n} replies for {} commands", round.len()));
                op.handle_replies((0..n).map(|_| random_reply(rng, 0, &mut 8)).collect());
                tally.wrong_counts += 1;
                let Step::Done(Err(e)) = op.poll() else {
                    panic!("a wrong reply count must end the op")
                };
                assert_eq!(e.code(), "usage", "{e}");
                *tally
                    .results
                    .entry((kind, "usage (wrong count)".to_owned()))
                    .or_default() += 1;
                return;
            }
            2 => {
                let failure = rng.pick(&[
                    BackendFailure::Timeout,
                    BackendFailure::Unavailable("reset".into()),
                    BackendFailure::Other("x".into()),
                ]);
                trace.log(|| format!("failure {failure:?}"));
                op.handle_failure(failure);
                tally.failures += 1;
                let Step::Done(Err(e)) = op.poll() else {
                    panic!("a transport failure must end the op")
                };
                assert!(
                    matches!(e.code(), "backend_timeout" | "backend_unavailable"),
                    "{e}"
                );
                return;
            }
            _ => {}
        }
        let replies: Vec<Reply> = round
            .commands()
            .iter()
            .map(|c| hostile_reply(rng, c, fx))
            .collect();
        tally.replies += replies.len();
        trace.log(|| format!("replies {}", show_all(&replies)));
        if !in_fallback {
            let resend: Vec<Command> = round
                .commands()
                .iter()
                .zip(&replies)
                .filter(|(c, r)| {
                    c.name() == b"EVALSHA"
                        && matches!(r, Reply::Error(e) if e.starts_with("NOSCRIPT"))
                })
                .map(|(c, _)| c.clone())
                .collect();
            fallback = (!resend.is_empty()).then_some(resend);
        }
        op.handle_replies(replies);
    }
}

#[test]
fn reply_decoder_survives_a_million_hostile_replies() {
    let mut rng = Rng(0xa409_3822_299f_31d0);
    let fixtures = [
        fixture(Engine::new(Config::default()).unwrap(), &mut rng),
        fixture(Engine::new(rich_config()).unwrap(), &mut rng),
    ];
    let mut tally = Tally::default();
    let mut panics = Panics::new();
    let mut i = 0usize;
    while tally.ops < MILLION {
        i += 1;
        let fx = &fixtures[i % 3 / 2];
        let keep_going = panics.run(&mut rng, |rng, trace| {
            let kind = rng.pick(KINDS);
            drive(rng, fx, kind, &mut tally, trace);
        });
        if !keep_going {
            break;
        }
    }
    panics.assert_none("reply decoder");
    assert!(tally.ops >= MILLION, "ops {}", tally.ops);
    eprintln!(
        "ops {}, replies {}, fallbacks {}, wrong counts {}, failures {}\nmax rounds {:?}",
        tally.ops,
        tally.replies,
        tally.fallbacks,
        tally.wrong_counts,
        tally.failures,
        tally.max_rounds
    );
    for ((kind, what), n) in &tally.results {
        eprintln!("  {kind:?} {what}: {n}");
    }
    assert!(tally.fallbacks > 10_000 && tally.wrong_counts > 10_000 && tally.failures > 5_000);
    // Every op must reach success and failure, and the deep paths must be hit.
    let hit = |kind: Kind, what: &str| {
        tally
            .results
            .get(&(kind, what.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    for kind in KINDS {
        let ok = tally
            .results
            .iter()
            .filter(|((k, w), _)| {
                k == kind && !STABLE_CODES.contains(&w.as_str()) && !w.starts_with("usage")
            })
            .count();
        assert!(
            ok > 0 && hit(*kind, "decode") + hit(*kind, "backend_error") > 1_000,
            "{kind:?}: {:?}",
            tally.results
        );
    }
    for (kind, what) in [
        (Kind::Load, "loaded"),
        (Kind::Save, "saved"),
        (Kind::Save, "saved (new id)"),
        (Kind::Save, "gone"),
        (Kind::Save, "rotated"),
        (Kind::Save, "backend_collision"),
        (Kind::Regenerate, "saved (new id)"),
        (Kind::Regenerate, "gone"),
        (Kind::Regenerate, "backend_not_durable"),
        (Kind::Destroy, "destroyed (some)"),
        (Kind::DestroyAll, "destroyed (some)"),
        (Kind::List, "devices (some)"),
        (Kind::DestroyOne, "destroyed (some)"),
    ] {
        assert!(
            hit(kind, what) > 100,
            "{kind:?} {what}: {}",
            hit(kind, what)
        );
    }
}

// ---- 4. the config parser ---------------------------------------------------

const MS_GOOD: &[&str] = &[
    "1800000",
    "600000",
    "3600000",
    "86400000",
    "60000",
    "1000",
    "315360000000",
];
const NUM_BAD: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "1e3",
    "18446744073709551615",
    "18446744073709551616",
    "-0",
    "\"60000\"",
    "null",
    "true",
    "[]",
    "{}",
    "315360000001",
    "99999999999999999999999",
    "4294967296",
    "NaN",
];
const BOOLS: &[&str] = &["true", "false"];
const BOOL_BAD: &[&str] = &["1", "\"true\"", "null", "True", "[]"];
const STR_BAD: &[&str] = &[
    "1",
    "null",
    "true",
    "[\"a\"]",
    "{}",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"\u{1}\"",
];

/// A config field: name, good values, bad values (as JSON text).
struct Field {
    name: &'static str,
    good: &'static [&'static str],
    bad: &'static [&'static str],
}

const TOP: &[Field] = &[
    Field {
        name: "prefix",
        good: &[
            "\"sess:\"",
            "\"s\"",
            "\"app:sess:\"",
            "\"vrs-\"",
            "\"é:\"",
            "\"{s}:\"",
        ],
        bad: &[
            "\"\"",
            "\"a b\"",
            "\"a*\"",
            "\"a\\\\b\"",
            "\"x\\u0001\"",
            "\"\\u3000\"",
        ],
    },
    Field {
        name: "allow_hash_tag",
        good: BOOLS,
        bad: BOOL_BAD,
    },
    Field {
        name: "key_scheme",
        good: &["\"hashed\"", "\"plain\""],
        bad: &["\"Hashed\"", "\"sha256\"", "\"\"", "0"],
    },
    Field {
        name: "id_format",
        good: &["\"base64url\"", "\"base64_padded\""],
        bad: &["\"base64\"", "\"Base64url\"", "\"hex\""],
    },
    Field {
        name: "idle_timeout_ms",
        good: MS_GOOD,
        bad: NUM_BAD,
    },
    Field {
        name: "absolute_lifetime_ms",
        good: &["86400000", "604800000", "3600000", "315360000000"],
        bad: NUM_BAD,
    },
    Field {
        name: "touch_interval_ms",
        good: &["60000", "0", "1000", "30000"],
        bad: NUM_BAD,
    },
    Field {
        name: "rotation_grace_ms",
        good: &["5000", "1", "60000"],
        bad: &["0", "60001", "-5", "5e3"],
    },
    Field {
        name: "rotate_every_ms",
        good: &["null", "60000", "3600000"],
        bad: NUM_BAD,
    },
    Field {
        name: "max_field_bytes",
        good: &["65536", "1", "1024"],
        bad: NUM_BAD,
    },
    Field {
        name: "max_record_bytes",
        good: &["262144", "67108864", "65536"],
        bad: &["67108865", "0", "-1", "1e9"],
    },
    Field {
        name: "max_fields",
        good: &["256", "1", "1000"],
        bad: &["0", "1001", "-1", "1.0"],
    },
    Field {
        name: "max_sessions_per_user",
        good: &["null", "1", "5", "4294967295"],
        bad: &["0", "4294967296", "-1"],
    },
    Field {
        name: "client_binding",
        good: &["\"off\"", "\"report\"", "\"reject\""],
        bad: &["\"on\"", "\"Off\"", "null", "false"],
    },
    Field {
        name: "durable_revocation",
        good: &[
            "null",
            "{\"replicas\": 1, \"timeout_ms\": 100}",
            "{\"timeout_ms\": 5, \"replicas\": 4294967295}",
        ],
        bad: &[
            "{}",
            "{\"replicas\": 0, \"timeout_ms\": 1}",
            "{\"replicas\": 1}",
            "{\"replicas\": 1, \"timeout_ms\": 0}",
            "{\"replicas\": 1, \"timeout_ms\": 1, \"x\": 1}",
            "[1, 100]",
            "true",
        ],
    },
    Field {
        name: "log_key",
        good: &["null", "\"0123456789abcdef\"", "\"é€💥 long enough key\""],
        bad: &["\"short\"", "\"\"", "1"],
    },
];

const COOKIE: &[Field] = &[
    Field {
        name: "name",
        good: &[
            "\"sid\"",
            "\"__Host-sid\"",
            "\"__Secure-sid\"",
            "\"SID\"",
            "\"a_rather_long_session_cookie_name_0123456789\"",
            "\"a!#$%&'*+-.^_`|~\"",
        ],
        bad: &[
            "\"\"",
            "\"a b\"",
            "\"a;b\"",
            "\"é\"",
            "\"a=b\"",
            "\"__host-x\"",
        ],
    },
    Field {
        name: "path",
        good: &["\"/\"", "\"/app\"", "\"/a/b/\""],
        bad: &["\"\"", "\"app\"", "\"/a;b\"", "\"/é\"", "\"/a b\""],
    },
    Field {
        name: "domain",
        good: &[
            "null",
            "\"example.com\"",
            "\".example.com\"",
            "\"localhost\"",
        ],
        bad: &["\"\"", "\"exa mple.com\"", "\"a;b\"", "\"é.com\""],
    },
    Field {
        name: "secure",
        good: BOOLS,
        bad: BOOL_BAD,
    },
    Field {
        name: "http_only",
        good: BOOLS,
        bad: BOOL_BAD,
    },
    Field {
        name: "same_site",
        good: &["\"lax\"", "\"strict\"", "\"none\""],
        bad: &["\"Lax\"", "\"LAX\"", "\"\"", "\"no\"", "null"],
    },
    Field {
        name: "persistent",
        good: BOOLS,
        bad: BOOL_BAD,
    },
    Field {
        name: "max_header_bytes",
        good: &["8192", "64", "1048576", "4096"],
        bad: &["63", "1048577", "0", "-1", "1e4"],
    },
];

const JUNK_KEYS: &[&str] = &[
    "prefx",
    "Prefix",
    "",
    "cookie.name",
    "__proto__",
    "$v",
    "é",
    "idle_timeout",
    "PREFIX",
    "\\u0070refix",
    "max_fields ",
];

const JUNK_VALUES: &[&str] = &[
    "[[[[[[[[[[]]]]]]]]]]",
    "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":null}]}}}",
    "\"💥\\n\\t\\\"\"",
    "-9223372036854775809",
    "1e400",
    "[]",
    "{}",
    "null",
    "\"\\uDC00\"",
];

fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Write `{ … }` with a random subset of `fields`, mostly good values.
fn write_object(rng: &mut Rng, fields: &[Field], out: &mut String, depth: usize) {
    out.push('{');
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    let start = rng.below(fields.len());
    for k in 0..fields.len() {
        let f = &fields[(start + k) % fields.len()];
        if rng.one_in(2) {
            continue;
        }
        sep(out);
        let key = if rng.one_in(60) {
            rng.pick(JUNK_KEYS)
        } else {
            f.name
        };
        push_key(out, key);
        match rng.below(64) {
            0 | 1 => out.push_str(rng.pick(f.bad)),
            2 => out.push_str(rng.pick(JUNK_VALUES)),
            3 => out.push_str(rng.pick(STR_BAD)),
            _ => out.push_str(rng.pick(f.good)),
        }
        if rng.one_in(80) {
            // A duplicate key.
            sep(out);
            push_key(out, f.name);
            out.push_str(rng.pick(f.good));
        }
    }
    if depth == 0 && !rng.one_in(3) {
        sep(out);
        let key = if rng.one_in(60) { "Cookie" } else { "cookie" };
        push_key(out, key);
        if rng.one_in(40) {
            out.push_str(rng.pick(JUNK_VALUES));
        } else {
            write_object(rng, COOKIE, out, depth + 1);
        }
    }
    out.push('}');
}

/// Text-level damage: truncation, insertion, deletion, wrapping, nesting.
fn damage(rng: &mut Rng, text: &mut String) {
    let boundary = |text: &String, mut at: usize| {
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match rng.below(10) {
        0 | 1 => {
            let at = boundary(text, rng.below(text.len() + 1));
            text.truncate(at);
        }
        2 | 3 => {
            let at = boundary(text, rng.below(text.len() + 1));
            text.insert(
                at,
                rng.pick(&[
                    '{', '}', '[', ']', '"', ',', ':', '\\', '\0', 'é', '💥', ' ', '1', '-',
                    '\u{feff}',
                ]),
            );
        }
        4 if !text.is_empty() => {
            let at = boundary(text, rng.below(text.len()));
            text.remove(at);
        }
        5 => *text = format!("[{text}]"),
        6 => text.push_str(rng.pick(&["x", "}", " ", "\n", "{}", "//c", "\0"])),
        7 => *text = format!("\u{feff}{text}"),
        8 => {
            let n = rng.pick(&[10, 127, 128, 129, 300]);
            *text = format!("{}{}{}", "[".repeat(n), text, "]".repeat(n));
        }
        _ => {
            let at = boundary(text, rng.below(text.len() + 1));
            let junk = String::from_utf8_lossy(&random_bytes(rng, 8)).into_owned();
            text.insert_str(at, &junk);
        }
    }
}

const CONFIG_FIELDS: &[&str] = &[
    "config",
    "prefix",
    "idle_timeout_ms",
    "absolute_lifetime_ms",
    "touch_interval_ms",
    "rotation_grace_ms",
    "rotate_every_ms",
    "max_fields",
    "max_field_bytes",
    "max_record_bytes",
    "max_sessions_per_user",
    "durable_revocation.replicas",
    "durable_revocation.timeout_ms",
    "cookie.name",
    "cookie.path",
    "cookie.domain",
    "cookie.same_site",
    "cookie.max_header_bytes",
    "log_key",
];

/// An accepted config must work end to end: a first write mints an ID whose
/// Set-Cookie the same engine reads back with one Redis round.
fn smoke(rng: &mut Rng, engine: &Engine) -> bool {
    let mut session = engine.new_session();
    session.insert("k", serde_json::json!([1, "é"])).unwrap();
    let saved = run_with(
        engine.save(session, Entropy(rng.bytes32()), NOW),
        |cmd| match cmd.name() {
            b"EVALSHA" => Reply::Int(1),
            _ => Reply::Array(vec![]),
        },
    );
    let set_cookie = match saved {
        Ok(Outcome::Saved {
            cookie: Some(c), ..
        }) => c,
        // max_field_bytes can be as small as 1: nothing fits.
        Err(e) if e.code() == "too_large" => return true,
        other => panic!("first write: {other:?}"),
    };
    let pair = set_cookie.split(';').next().unwrap();
    let mut op = engine.load(Some(pair), None, NOW);
    matches!(op.poll(), Step::Round(r) if r.len() == 1)
}

#[test]
fn config_parser_survives_a_million_hostile_configs() {
    let mut rng = Rng(0x0828_8c6d_a5d7_49f4);
    let mut panics = Panics::new();
    let mut text = String::new();
    let (mut ok, mut refused) = (0usize, BTreeMap::<String, usize>::new());
    let mut unreadable: Vec<String> = Vec::new();
    for _ in 0..MILLION {
        let keep_going = panics.run(&mut rng, |rng, trace| {
            text.clear();
            write_object(rng, TOP, &mut text, 0);
            if rng.one_in(6) {
                damage(rng, &mut text);
            }
            trace.log(|| format!("Config::from_json({text:?})"));
            match Config::from_json(&text) {
                Ok(config) => {
                    ok += 1;
                    config.validate().expect("an accepted config validates");
                    if ok % 4 == 0 {
                        // It survives a round trip through its own JSON.
                        let again = serde_json::to_string(&config).unwrap();
                        assert_eq!(Config::from_json(&again).as_ref(), Ok(&config));
                    }
                    let engine = Engine::new(config).expect("an accepted config builds an engine");
                    if ok % 4 == 0 && !smoke(rng, &engine) && unreadable.len() < 3 {
                        unreadable.push(text.clone());
                    }
                }
                Err(e) => {
                    assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
                    assert!(
                        CONFIG_FIELDS.contains(&e.field.as_str()),
                        "unknown field name in {e:?}"
                    );
                    *refused.entry(e.field).or_default() += 1;
                }
            }
        });
        if !keep_going {
            break;
        }
    }
    panics.assert_none("config parser");
    eprintln!("configs accepted {ok}, refused {refused:?}");
    if !unreadable.is_empty() {
        eprintln!("accepted configs whose engine cannot read its own cookie: {unreadable:#?}");
    }
    assert!(ok > 50_000, "accepted {ok}");
    // Every rule is reached.
    for field in CONFIG_FIELDS {
        assert!(
            refused.get(*field).copied().unwrap_or(0) > 100,
            "{field}: {refused:?}"
        );
    }
}
