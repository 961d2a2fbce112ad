//! The C-ABI wasm build of session-logic (`--features wasm-abi`, see
//! `session-logic/src/abi.rs`) under wasmtime: it has no imports, it replays
//! every conformance vector byte-for-byte like the native build, and no input
//! makes it trap.
//!
//! The module is built by `scripts/steps/wasm`, never by this test. Paths:
//! - `SESSION_LOGIC_WASM` (default `<workspace>/target/wasm-abi/session_logic.wasm`)
//! - `SESSION_LOGIC_VECTORS` (default `<workspace>/tests/vectors`)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use wasmparser::ExternalKind;
use wasmtime::error::Context as _;
use wasmtime::{
    Engine, Instance, Memory, Module, Result, Store, TypedFunc, bail, ensure, format_err,
};

fn workspace_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .map_or_else(|| tests_crate.join(".."), Path::to_path_buf)
}

fn wasm_path() -> PathBuf {
    std::env::var_os("SESSION_LOGIC_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm-abi/session_logic.wasm"))
}

fn vectors_dir() -> PathBuf {
    std::env::var_os("SESSION_LOGIC_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/vectors"))
}

fn wasm_bytes() -> Result<Vec<u8>> {
    let path = wasm_path();
    if !path.is_file() {
        bail!(
            "wasm-abi module not found at {}: run `scripts/steps/wasm` first \
             (or point SESSION_LOGIC_WASM at a module built with `cargo rustc -p session-logic \
             --target wasm32-unknown-unknown --release --features wasm-abi --crate-type cdylib`)",
            path.display()
        );
    }
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// One Engine + compiled Module per test process (cranelift compile is the
/// slow part), shared by every test; each test gets its own Store.
fn engine_and_module() -> Result<(Engine, Module)> {
    static COMPILED: OnceLock<std::result::Result<(Engine, Module), String>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let compile = || -> Result<(Engine, Module)> {
                let bytes = wasm_bytes()?;
                let engine = Engine::default();
                let started = Instant::now();
                let module = Module::new(&engine, &bytes)
                    .with_context(|| format!("compiling {}", wasm_path().display()))?;
                eprintln!(
                    "wasm-abi: compiled {} ({} bytes) with cranelift in {:?}",
                    wasm_path().display(),
                    bytes.len(),
                    started.elapsed()
                );
                Ok((engine, module))
            };
            compile().map_err(|e| format!("{e:?}"))
        })
        .clone()
        .map_err(|e| format_err!("{e}"))
}

/// An instance of the module and its three ABI functions.
struct Abi {
    store: Store<()>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    dealloc: TypedFunc<(u32, u32), ()>,
    run: TypedFunc<(u32, u32), u64>,
}

impl Abi {
    fn new() -> Result<Self> {
        let (engine, module) = engine_and_module()?;
        let mut store = Store::new(&engine, ());
        // No imports: instantiation with an empty list is the proof.
        let instance = Instance::new(&mut store, &module, &[])?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("module does not export `memory`")?;
        let alloc = instance.get_typed_func::<u32, u32>(&mut store, "sl_alloc")?;
        let dealloc = instance.get_typed_func::<(u32, u32), ()>(&mut store, "sl_dealloc")?;
        let run = instance.get_typed_func::<(u32, u32), u64>(&mut store, "sl_run")?;
        Ok(Abi {
            store,
            memory,
            alloc,
            dealloc,
            run,
        })
    }

    /// `sl_alloc` + copy in + `sl_run` + `sl_dealloc` (input) + copy out +
    /// `sl_dealloc` (output): exactly what every host does.
    fn run(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let len = u32::try_from(input.len()).context("input longer than 4 GiB")?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        ensure!(ptr != 0, "sl_alloc({len}) returned 0 (out of memory)");
        self.memory
            .write(&mut self.store, usize::try_from(ptr)?, input)?;
        let packed = self.run.call(&mut self.store, (ptr, len))?;
        self.dealloc.call(&mut self.store, (ptr, len))?;
        let out_ptr = u32::try_from(packed >> 32)?;
        let out_len = u32::try_from(packed & 0xffff_ffff)?;
        ensure!(out_ptr != 0, "sl_run returned a null output buffer");
        let mut out = vec![0u8; usize::try_from(out_len)?];
        self.memory
            .read(&self.store, usize::try_from(out_ptr)?, &mut out)?;
        self.dealloc.call(&mut self.store, (out_ptr, out_len))?;
        Ok(out)
    }

    fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

struct Vector {
    file: String,
    name: String,
    input: Vec<u8>,
    expect: Value,
}

fn load_vectors() -> Result<Vec<Vector>> {
    let dir = vectors_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading vector directory {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::result::Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "json") && p.is_file());
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    ensure!(
        !files.is_empty(),
        "no *.json conformance vectors in {} (were they generated? set SESSION_LOGIC_VECTORS to \
         point elsewhere)",
        dir.display()
    );
    files
        .iter()
        .map(|path| {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut v: Value = serde_json::from_slice(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let obj = v
                .as_object_mut()
                .with_context(|| format!("{file}: not a JSON object"))?;
            let name = match obj.get("name") {
                Some(Value::String(s)) => s.clone(),
                _ => file.clone(),
            };
            let input = obj
                .remove("input")
                .with_context(|| format!("{file}: no `input`"))?;
            let expect = obj
                .remove("expect")
                .with_context(|| format!("{file}: no `expect`"))?;
            Ok(Vector {
                file,
                name,
                input: serde_json::to_vec(&input)?,
                expect,
            })
        })
        .collect()
}

/// Up to `limit` paths where two JSON values differ, each with both sides.
fn json_diffs(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || expected == actual {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => json_diffs(&p, ev, av, out, limit),
                    None => out.push(format!("{p}: missing (expected {ev})")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) && out.len() < limit {
                    out.push(format!("{path}.{k}: unexpected (got {av})"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, pair) in e.iter().zip(a.iter()).enumerate() {
                json_diffs(&format!("{path}[{i}]"), pair.0, pair.1, out, limit);
            }
            if e.len() != a.len() && out.len() < limit {
                out.push(format!(
                    "{path}: expected {} elements, got {}",
                    e.len(),
                    a.len()
                ));
            }
        }
        _ => out.push(format!(
            "{path}:\n      expected {expected}\n      got      {actual}"
        )),
    }
}

fn describe_mismatch(expected: &Value, actual: &Value) -> String {
    let mut diffs = Vec::new();
    json_diffs("$", expected, actual, &mut diffs, 20);
    let mut s = String::from("  differences (expect vs output):\n");
    for d in &diffs {
        let _ = writeln!(s, "    {d}");
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|e| e.to_string());
    let _ = write!(
        s,
        "  expect:\n{}\n  output:\n{}",
        pretty(expected),
        pretty(actual)
    );
    s
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn wasm_abi_module_has_no_imports() -> Result<()> {
    let bytes = wasm_bytes()?;
    wasmparser::Validator::new()
        .validate_all(&bytes)
        .context("module does not validate")?;
    let mut imports = 0u32;
    let mut exports: Vec<(String, ExternalKind)> = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload? {
            wasmparser::Payload::ImportSection(reader) => imports += reader.count(),
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export?;
                    exports.push((export.name.to_owned(), export.kind));
                }
            }
            _ => {}
        }
    }
    ensure!(
        imports == 0,
        "the wasm-abi module must import nothing, it has {imports} import(s)"
    );
    let wanted = [
        ("memory", ExternalKind::Memory),
        ("sl_alloc", ExternalKind::Func),
        ("sl_dealloc", ExternalKind::Func),
        ("sl_run", ExternalKind::Func),
    ];
    for (name, kind) in wanted {
        ensure!(
            exports.iter().any(|(n, k)| n == name && *k == kind),
            "missing export {name} ({kind:?}); exports are {exports:?}"
        );
    }
    // Signatures are checked by `get_typed_func` when instantiating.
    Abi::new().map(drop)
}

#[test]
fn vectors_replay_identically_under_wasmtime() -> Result<()> {
    let vectors = load_vectors()?;
    let mut abi = Abi::new()?;
    let started = Instant::now();
    let mut failures = Vec::new();
    for v in &vectors {
        let native = session_logic::conformance::run_json(&v.input);
        let wasm = abi
            .run(&v.input)
            .with_context(|| format!("vector {} ({})", v.name, v.file))?;
        if wasm != native {
            let at = first_difference(&native, &wasm);
            failures.push(format!(
                "vector {} ({}): wasm output differs from native at byte {at}\n  native: {}\n  wasm:   {}",
                v.name,
                v.file,
                String::from_utf8_lossy(&native),
                String::from_utf8_lossy(&wasm)
            ));
            continue;
        }
        match serde_json::from_slice::<Value>(&wasm) {
            Ok(actual) if actual == v.expect => {}
            Ok(actual) => failures.push(format!(
                "vector {} ({}): output does not match `expect`\n{}",
                v.name,
                v.file,
                describe_mismatch(&v.expect, &actual)
            )),
            Err(e) => failures.push(format!(
                "vector {} ({}): output is not JSON ({e}): {}",
                v.name,
                v.file,
                String::from_utf8_lossy(&wasm)
            )),
        }
    }
    eprintln!(
        "wasm-abi: replayed {} vectors in {:?} ({} failed)",
        vectors.len(),
        started.elapsed(),
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} vectors failed:\n\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n\n")
    );
    Ok(())
}

/// xorshift64: small, deterministic, good enough to make garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        match u64::try_from(n) {
            Ok(n) if n > 0 => usize::try_from(self.next() % n).unwrap_or(0),
            _ => 0,
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| self.next().to_le_bytes().first().copied().unwrap_or(0))
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

const MIB: usize = 1 << 20;
const DEEP: usize = 10_000;

/// Plausible operation inputs (the `VectorInput` shape of
/// `session_logic::conformance`), so mutations reach past the top-level parse
/// even before the real vectors exist; real vectors are added as seeds too.
fn builtin_seeds() -> Vec<Value> {
    let entropy = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let cookie = "sid=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    serde_json::json!([
        {
            "config": {},
            "now": 1_700_000_000_000u64,
            "entropy": entropy,
            "op": {"load": {"cookie": cookie, "client": "ua"}},
            "replies": [
                [{"array": [{"bulk": "v"}, {"int": 1}, "nil", {"simple": "OK"}]}],
                [{"error": "NOSCRIPT No matching script"}]
            ]
        },
        {
            "config": {"prefix": "sess:"},
            "now": 1_700_000_000_000u64,
            "op": {"load": {"cookie": null}},
            "replies": []
        },
        {
            "config": {},
            "now": 1,
            "entropy": entropy,
            "op": {"destroy_all_for_user": {"user": "alice"}},
            "replies": [[{"array": [{"bulk": "k1"}, {"bulk": "k2"}]}], [{"int": 2}]],
            "failure": {"round": 1, "failure": {"kind": "timeout"}}
        }
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn hostile_value(rng: &mut XorShift) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(-1),
        3 => Value::from(u64::MAX),
        4 => Value::from(i64::MIN),
        5 => Value::from(f64::MAX),
        6 => Value::from(""),
        7 => Value::from("x".repeat(rng.below(70_000))),
        8 => {
            let len = rng.below(64);
            Value::from(String::from_utf8_lossy(&rng.bytes(len)).into_owned())
        }
        9 => Value::Array(vec![]),
        10 => Value::Object(serde_json::Map::new()),
        11 => (0..200).fold(Value::Null, |inner, _| Value::Array(vec![inner])),
        12 => Value::from("\u{0}\u{feff}\u{10ffff}"),
        _ => Value::Array((0..rng.below(5_000)).map(Value::from).collect()),
    }
}

/// Replace one random node of `v` (maybe the root) with a hostile value.
fn mutate(v: &mut Value, rng: &mut XorShift) {
    let descend = rng.below(4) != 0;
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let i = rng.below(map.len());
            if let Some(child) = map.values_mut().nth(i) {
                mutate(child, rng);
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.below(items.len());
            if let Some(child) = items.get_mut(i) {
                mutate(child, rng);
            }
        }
        _ => *v = hostile_value(rng),
    }
}

/// ~2,000 inputs: fixed pathological cases, random bytes, JSON-alphabet soup,
/// truncated, byte-flipped and structurally mutated inputs.
fn hostile_inputs(seeds: &[Value]) -> Vec<(String, Vec<u8>)> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let seed_bytes: Vec<Vec<u8>> = seeds
        .iter()
        .filter_map(|s| serde_json::to_vec(s).ok())
        .collect();

    let nested = |open: &str, close: &str| format!("{}{}", open.repeat(DEEP), close.repeat(DEEP));
    let huge_string = format!("\"{}\"", "a".repeat(MIB));
    let huge_field = serde_json::json!({"op": "load", "cookie": "a".repeat(MIB)});
    let mut invalid_utf8 = b"{\"cookie\":\"".to_vec();
    invalid_utf8.extend(std::iter::repeat_n(0xffu8, MIB));
    invalid_utf8.extend_from_slice(b"\"}");
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("whitespace", b" \n\t\r ".to_vec()),
        ("null", b"null".to_vec()),
        ("nul byte", vec![0]),
        ("empty object", b"{}".to_vec()),
        ("empty array", b"[]".to_vec()),
        ("number", b"1e999".to_vec()),
        (
            "big integer",
            b"184467440737095516161844674407370955161".to_vec(),
        ),
        ("lone surrogate", b"\"\\ud800\"".to_vec()),
        ("bom", b"\xef\xbb\xbf{}".to_vec()),
        ("arrays 10k deep", nested("[", "]").into_bytes()),
        ("objects 10k deep", nested("{\"a\":", "}").into_bytes()),
        ("unclosed arrays 100k", "[".repeat(100_000).into_bytes()),
        ("1 MiB string", huge_string.into_bytes()),
        (
            "1 MiB field",
            serde_json::to_vec(&huge_field).unwrap_or_default(),
        ),
        ("1 MiB invalid utf-8", invalid_utf8),
        ("1 MiB random", rng.bytes(MIB)),
        ("trailing garbage", b"{} {}".to_vec()),
        (
            "duplicate keys",
            b"{\"op\":\"load\",\"op\":\"save\"}".to_vec(),
        ),
    ];
    out.extend(fixed.into_iter().map(|(n, b)| (n.to_owned(), b)));
    // Every top-level field of each seed replaced by arrays 10k deep. Built as
    // text: a 10k-deep `Value` would overflow the native stack when dropped.
    let deep = nested("[", "]");
    for (i, seed) in seeds.iter().enumerate() {
        if let Value::Object(map) = seed {
            let fields: Vec<String> = map
                .keys()
                .map(|k| format!("{}:{deep}", Value::from(k.as_str())))
                .collect();
            out.push((
                format!("seed {i} with every field 10k deep"),
                format!("{{{}}}", fields.join(",")).into_bytes(),
            ));
        }
    }

    let soup = b"{}[]\":,0123456789-+.eEtrufalsn\\ \"abcxyz";
    for i in 0..400 {
        let len = rng.below(2048);
        out.push((format!("random bytes #{i}"), rng.bytes(len)));
    }
    for i in 0..300 {
        let len = rng.below(512);
        let b = (0..len)
            .map(|_| soup.get(rng.below(soup.len())).copied().unwrap_or(b'['))
            .collect();
        out.push((format!("json soup #{i}"), b));
    }
    for i in 0..400 {
        if let Some(seed) = rng.pick(&seed_bytes) {
            let cut = rng.below(seed.len());
            out.push((
                format!("truncated #{i}"),
                seed.get(..cut).unwrap_or_default().to_vec(),
            ));
        }
    }
    for i in 0..400 {
        if let Some(seed) = rng.pick(&seed_bytes) {
            let mut b = seed.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len());
                let byte = rng.bytes(1).first().copied().unwrap_or(0);
                if let Some(slot) = b.get_mut(at) {
                    *slot = byte;
                }
            }
            out.push((format!("byte-flipped #{i}"), b));
        }
    }
    for i in 0..480 {
        if let Some(seed) = rng.pick(seeds) {
            let mut v = seed.clone();
            for _ in 0..=rng.below(3) {
                mutate(&mut v, &mut rng);
            }
            if let Ok(b) = serde_json::to_vec(&v) {
                out.push((format!("mutated #{i}"), b));
            }
        }
    }
    out.extend(boundary_numbers(seeds));
    out
}

/// Integers where 32- and 64-bit targets part ways (`usize` is 32 bits on
/// wasm32), where JSON numbers stop being exact in JS, and non-integers.
const BOUNDARY_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "0.5",
    "1e300",
];

/// Every distinct numeric field of the seeds (array indices folded), set to
/// each of [`BOUNDARY_NUMBERS`] in turn: systematic, unlike the random
/// mutations, so adding vectors never moves this coverage around.
fn boundary_numbers(seeds: &[Value]) -> Vec<(String, Vec<u8>)> {
    fn numeric_pointers(v: &Value, pointer: &str, shape: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Number(_) => out.push((pointer.to_owned(), shape.to_owned())),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    numeric_pointers(item, &format!("{pointer}/{i}"), &format!("{shape}/*"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    numeric_pointers(
                        item,
                        &format!("{pointer}/{k}"),
                        &format!("{shape}/{k}"),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for seed in seeds {
        let mut pointers = Vec::new();
        numeric_pointers(seed, "", "", &mut pointers);
        for (pointer, shape) in pointers {
            if !seen.insert(shape.clone()) {
                continue;
            }
            for number in BOUNDARY_NUMBERS {
                let mut v = seed.clone();
                let Ok(replacement) = serde_json::from_str::<Value>(number) else {
                    continue;
                };
                if let Some(slot) = v.pointer_mut(&pointer) {
                    *slot = replacement;
                }
                if let Ok(b) = serde_json::to_vec(&v) {
                    out.push((format!("{shape} = {number}"), b));
                }
            }
        }
    }
    out
}

fn preview(bytes: &[u8]) -> String {
    let head = bytes.get(..160).unwrap_or(bytes);
    format!("{} bytes: {}…", bytes.len(), String::from_utf8_lossy(head))
}

#[test]
fn hostile_inputs_do_not_trap() -> Result<()> {
    // Real vectors (if present) make better mutation seeds than the built-ins.
    let mut seeds = builtin_seeds();
    if let Ok(vectors) = load_vectors() {
        seeds.extend(
            vectors
                .iter()
                .filter_map(|v| serde_json::from_slice(&v.input).ok()),
        );
    }
    let inputs = hostile_inputs(&seeds);
    ensure!(
        inputs.len() >= 1_900,
        "only {} hostile inputs generated",
        inputs.len()
    );
    let mut abi = Abi::new()?;
    let started = Instant::now();
    // A trap ends the run at once (the instance is not trusted after one);
    // divergences are collected so one run lists them all.
    let mut failures = Vec::new();
    for (what, input) in &inputs {
        let wasm = abi
            .run(input)
            .with_context(|| format!("trap on hostile input {what} ({})", preview(input)))?;
        if let Err(e) = serde_json::from_slice::<Value>(&wasm) {
            failures.push(format!(
                "hostile input {what} ({}): output is not JSON ({e}): {}",
                preview(input),
                preview(&wasm)
            ));
            continue;
        }
        let native = session_logic::conformance::run_json(input);
        if wasm != native {
            failures.push(format!(
                "hostile input {what} ({}): wasm and native outputs differ\n  native: {}\n  wasm:   {}",
                preview(input),
                preview(&native),
                preview(&wasm)
            ));
        }
    }
    eprintln!(
        "wasm-abi: {} hostile inputs in {:?}, linear memory now {} MiB",
        inputs.len(),
        started.elapsed(),
        abi.memory_bytes() / MIB
    );
    let shown = failures
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n\n");
    ensure!(
        failures.is_empty(),
        "{} of {} hostile inputs failed (first 20 shown):\n\n{shown}",
        failures.len(),
        inputs.len()
    );
    Ok(())
}

#[test]
fn repeated_calls_do_not_leak() -> Result<()> {
    let small: Vec<Vec<u8>> = builtin_seeds()
        .iter()
        .filter_map(|s| serde_json::to_vec(s).ok())
        .collect();
    let big = vec![format!("\"{}\"", "a".repeat(MIB)).into_bytes()];
    // Many small calls catch a leaked output or input of a few hundred bytes;
    // a few 1 MiB calls catch a leaked big buffer. Separate instances, so the
    // free space a 1 MiB call leaves behind cannot hide small leaks (memory
    // only grows in 64 KiB pages).
    for (what, inputs, calls) in [("small", &small, 300), ("1 MiB", &big, 20)] {
        let mut abi = Abi::new()?;
        let run_all = |abi: &mut Abi, times: usize| -> Result<usize> {
            for _ in 0..times {
                for input in inputs {
                    abi.run(input)?;
                }
            }
            Ok(abi.memory_bytes())
        };
        let warm = run_all(&mut abi, 3)?;
        let after = run_all(&mut abi, calls)?;
        ensure!(
            after == warm,
            "linear memory grew from {warm} to {after} bytes over {calls} rounds of identical \
             {what} calls: something sl_alloc/sl_run hands out is not freed by sl_dealloc"
        );
    }
    Ok(())
}
