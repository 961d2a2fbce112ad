//! The C-ABI wasm build of session-logic (`--features wasm-abi`, see
//! `session-logic/src/abi.rs`) under wasmtime: it has no imports, it replays
//! every conformance vector byte-for-byte like the native build — through
//! the `sl_run` replay entry and through the packed, stateful hot path
//! (`sl_configure`/`sl_start`/`sl_step`/`sl_fail`/`sl_drop`, the one
//! `session-host --engine wasm` drives) —, no input makes it trap, and its
//! memory stays bounded over many calls.
//!
//! The module is built by `scripts/steps/wasm`, never by this test. Paths:
//! - `SESSION_LOGIC_WASM` (default `<workspace>/target/wasm-abi/session_logic.wasm`)
//! - `SESSION_LOGIC_VECTORS` (default `<workspace>/tests/vectors`)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use session_logic::conformance::{Driver, STEP_DONE, STEP_ROUND, VectorInput};
use session_logic::{Round, wire};
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

/// An instance of the module and its ABI functions: the `sl_run` replay
/// entry and the packed, stateful `sl_configure` … `sl_drop` hot path.
struct Abi {
    store: Store<()>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    dealloc: TypedFunc<(u32, u32), ()>,
    run: TypedFunc<(u32, u32), u64>,
    configure: TypedFunc<(u32, u32), u64>,
    start: TypedFunc<(u32, u32), u64>,
    step: TypedFunc<(u32, u32, u32), u64>,
    fail: TypedFunc<(u32, u32, u32), u64>,
    drop_op: TypedFunc<u32, ()>,
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
        let configure = instance.get_typed_func::<(u32, u32), u64>(&mut store, "sl_configure")?;
        let start = instance.get_typed_func::<(u32, u32), u64>(&mut store, "sl_start")?;
        let step = instance.get_typed_func::<(u32, u32, u32), u64>(&mut store, "sl_step")?;
        let fail = instance.get_typed_func::<(u32, u32, u32), u64>(&mut store, "sl_fail")?;
        let drop_op = instance.get_typed_func::<u32, ()>(&mut store, "sl_drop")?;
        Ok(Abi {
            store,
            memory,
            alloc,
            dealloc,
            run,
            configure,
            start,
            step,
            fail,
            drop_op,
        })
    }

    /// `sl_alloc` + copy in + `export(ptr, len)` + `sl_dealloc` (input) +
    /// copy out + `sl_dealloc` (output): exactly what every host does.
    fn call(
        &mut self,
        name: &str,
        input: &[u8],
        export: impl FnOnce(&mut Store<()>, u32, u32) -> Result<u64>,
    ) -> Result<Vec<u8>> {
        let len = u32::try_from(input.len()).context("input longer than 4 GiB")?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        ensure!(ptr != 0, "sl_alloc({len}) returned 0 (out of memory)");
        self.memory
            .write(&mut self.store, usize::try_from(ptr)?, input)?;
        let packed =
            export(&mut self.store, ptr, len).with_context(|| format!("{name} trapped"))?;
        self.dealloc.call(&mut self.store, (ptr, len))?;
        let out_ptr = u32::try_from(packed >> 32)?;
        let out_len = u32::try_from(packed & 0xffff_ffff)?;
        ensure!(out_ptr != 0, "{name} returned a null output buffer");
        let mut out = vec![0u8; usize::try_from(out_len)?];
        self.memory
            .read(&self.store, usize::try_from(out_ptr)?, &mut out)?;
        self.dealloc.call(&mut self.store, (out_ptr, out_len))?;
        Ok(out)
    }

    /// One `sl_run` call (a whole vector input in, its output out).
    fn run(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let f = self.run.clone();
        self.call("sl_run", input, |s, p, l| f.call(s, (p, l)))
    }

    fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

/// The packed, stateful surface, implemented by the module (under
/// wasmtime) and by the native [`Driver`] it wraps, so one host loop and
/// one hostile sequence run through both and their bytes can be compared.
trait Packed {
    fn configure(&mut self, config: &[u8]) -> Result<Vec<u8>>;
    fn start(&mut self, input: &[u8]) -> Result<Vec<u8>>;
    fn step(&mut self, op: u32, replies: &[u8]) -> Result<Vec<u8>>;
    fn fail(&mut self, op: u32, failure: &[u8]) -> Result<Vec<u8>>;
    fn drop_op(&mut self, op: u32) -> Result<()>;
}

impl Packed for Abi {
    fn configure(&mut self, config: &[u8]) -> Result<Vec<u8>> {
        let f = self.configure.clone();
        self.call("sl_configure", config, |s, p, l| f.call(s, (p, l)))
    }

    fn start(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let f = self.start.clone();
        self.call("sl_start", input, |s, p, l| f.call(s, (p, l)))
    }

    fn step(&mut self, op: u32, replies: &[u8]) -> Result<Vec<u8>> {
        let f = self.step.clone();
        self.call("sl_step", replies, |s, p, l| f.call(s, (op, p, l)))
    }

    fn fail(&mut self, op: u32, failure: &[u8]) -> Result<Vec<u8>> {
        let f = self.fail.clone();
        self.call("sl_fail", failure, |s, p, l| f.call(s, (op, p, l)))
    }

    fn drop_op(&mut self, op: u32) -> Result<()> {
        self.drop_op
            .call(&mut self.store, op)
            .context("sl_drop trapped")
    }
}

impl Packed for Driver {
    fn configure(&mut self, config: &[u8]) -> Result<Vec<u8>> {
        Ok(Driver::configure(self, config))
    }

    fn start(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        Ok(Driver::start(self, input))
    }

    fn step(&mut self, op: u32, replies: &[u8]) -> Result<Vec<u8>> {
        Ok(Driver::step(self, op, replies))
    }

    fn fail(&mut self, op: u32, failure: &[u8]) -> Result<Vec<u8>> {
        Ok(Driver::fail(self, op, failure))
    }

    fn drop_op(&mut self, op: u32) -> Result<()> {
        Driver::drop_op(self, op);
        Ok(())
    }
}

/// `sl_start`'s answer split: the op number and the first step.
fn split_start(out: &[u8]) -> Result<(u32, &[u8])> {
    let (n, step) = out.split_at_checked(4).with_context(|| {
        format!(
            "sl_start answered {} bytes, fewer than its op number",
            out.len()
        )
    })?;
    Ok((u32::from_le_bytes(<[u8; 4]>::try_from(n)?), step))
}

/// The outcome JSON of a done step, or `None` for a round.
fn done_json(step: &[u8]) -> Result<Option<Value>> {
    match step.split_first() {
        Some((&STEP_DONE, json)) => {
            Ok(Some(serde_json::from_slice(json).with_context(|| {
                format!("a done step that is not JSON: {}", preview(json))
            })?))
        }
        Some((&STEP_ROUND, _)) => Ok(None),
        _ => bail!("a step that is neither a round nor done: {}", preview(step)),
    }
}

/// The error code of a done step's `{"error": …}` (checks the step is one).
fn error_code(step: &[u8]) -> Result<String> {
    let outcome = done_json(step)?
        .with_context(|| format!("expected a typed error, got a round: {}", preview(step)))?;
    match outcome.pointer("/error/code") {
        Some(Value::String(code)) => Ok(code.clone()),
        _ => bail!("expected a typed error, got {outcome}"),
    }
}

/// Run a vector input the way a host runs an op on the packed path —
/// configure, start `{now, entropy, op}`, then per round the vector's
/// replies packed into `sl_step` (or its failure into `sl_fail`) — and
/// render the result as `conformance::run_json` does: `{"rounds",
/// "outcome"}`, `outcome` null when the vector runs out of replies (the op
/// is then dropped), a refused config as the outcome with no round.
fn replay_packed(host: &mut impl Packed, input: &VectorInput) -> Result<Value> {
    let configured: Value =
        serde_json::from_slice(&host.configure(&serde_json::to_vec(&input.config)?)?)
            .context("sl_configure answered something that is not JSON")?;
    if configured.get("ok") != Some(&Value::Bool(true)) {
        return Ok(serde_json::json!({ "rounds": [], "outcome": configured }));
    }
    let start = serde_json::json!({ "now": input.now, "entropy": input.entropy, "op": input.op });
    let out = host.start(&serde_json::to_vec(&start)?)?;
    let (n, first) = split_start(&out)?;
    let mut step = first.to_vec();
    let mut rounds: Vec<Round> = Vec::new();
    // The bound of `conformance::run`: 64 rounds, then the op is waiting.
    for i in 0..64u64 {
        if let Some(outcome) = done_json(&step)? {
            return Ok(serde_json::json!({ "rounds": rounds, "outcome": outcome }));
        }
        ensure!(n != 0, "sl_start answered a round for op number 0");
        let round = wire::decode_round(step.get(1..).unwrap_or_default())
            .map_err(|e| format_err!("an unreadable packed round: {e}"))?;
        rounds.push(round);
        if let Some(f) = input.failure.as_ref().filter(|f| f.round == i) {
            step = host.fail(n, &serde_json::to_vec(&f.failure)?)?;
        } else if let Some(replies) = usize::try_from(i).ok().and_then(|i| input.replies.get(i)) {
            let mut packed = Vec::new();
            wire::encode_replies(replies, &mut packed);
            step = host.step(n, &packed)?;
        } else {
            break;
        }
    }
    host.drop_op(n)?;
    Ok(serde_json::json!({ "rounds": rounds, "outcome": null }))
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
        ("sl_configure", ExternalKind::Func),
        ("sl_start", ExternalKind::Func),
        ("sl_step", ExternalKind::Func),
        ("sl_fail", ExternalKind::Func),
        ("sl_drop", ExternalKind::Func),
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

/// `outcome` as the vector runner would render it. The one known difference
/// between the packed path and `sl_run`, pending a fix in the core:
/// `Driver::configure` parses the config bytes with `serde_json::from_slice`,
/// whose errors end in " at line L column C", where `conformance::run`
/// deserializes an already parsed `Value` (no position). So for a refused
/// config (code `config`, field `config`) that suffix is cut from the two
/// messages, and nothing else is touched; `patched` counts the cuts.
fn without_config_error_position(outcome: &Value, patched: &mut usize) -> Value {
    fn cut(text: &str) -> Option<&str> {
        let (head, tail) = text.rsplit_once(" at line ")?;
        let (line, column) = tail.split_once(" column ")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(line) && digits(column)).then_some(head)
    }
    let mut out = outcome.clone();
    let is_config_parse = out.pointer("/outcome/error/code") == Some(&Value::from("config"))
        && out.pointer("/outcome/error/detail/field") == Some(&Value::from("config"));
    if is_config_parse {
        for pointer in ["/outcome/error/message", "/outcome/error/detail/message"] {
            if let Some(Value::String(text)) = out.pointer_mut(pointer)
                && let Some(head) = cut(text)
            {
                *text = head.to_owned();
                *patched += 1;
            }
        }
    }
    out
}

/// Every vector through the packed path — `sl_configure`, `sl_start`, then
/// `sl_step` / `sl_fail` per round — under wasmtime, and through the native
/// [`Driver`] those exports wrap: both give exactly the vector's `expect`
/// (rounds and outcome, compared as `vectors_replay_identically_under_wasmtime`
/// compares), so `--engine wasm` runs the rules the vectors pin down.
#[test]
fn vectors_replay_through_the_packed_exports() -> Result<()> {
    let vectors = load_vectors()?;
    // One instance and one driver for every vector: each vector configures
    // it afresh, as a pooled instance is configured once and then reused.
    let mut abi = Abi::new()?;
    let mut driver = Driver::default();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut patched = 0usize;
    for v in &vectors {
        let input: VectorInput = serde_json::from_slice(&v.input).with_context(|| {
            format!("vector {} ({}): input is not a VectorInput", v.name, v.file)
        })?;
        let wasm = replay_packed(&mut abi, &input)
            .with_context(|| format!("vector {} ({}) under wasmtime", v.name, v.file))?;
        let native = replay_packed(&mut driver, &input)
            .with_context(|| format!("vector {} ({}) natively", v.name, v.file))?;
        if wasm != native {
            failures.push(format!(
                "vector {} ({}): the packed path differs between wasm and the native Driver\n{}",
                v.name,
                v.file,
                describe_mismatch(&native, &wasm)
            ));
        } else if without_config_error_position(&wasm, &mut patched) != v.expect {
            failures.push(format!(
                "vector {} ({}): the packed path does not match `expect`\n{}",
                v.name,
                v.file,
                describe_mismatch(&v.expect, &wasm)
            ));
        }
    }
    ensure!(
        driver.in_flight() == 0,
        "the replay left {} ops in flight",
        driver.in_flight()
    );
    eprintln!(
        "wasm-abi: replayed {} vectors through the packed exports in {:?} ({} failed; serde_json's \
         position suffix cut from {} config error message(s), see \
         `without_config_error_position`)",
        vectors.len(),
        started.elapsed(),
        failures.len(),
        patched
    );
    ensure!(
        failures.is_empty(),
        "{} of {} vectors failed on the packed path:\n\n{}",
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

/// The vectors' inputs, parsed (the packed path takes them apart).
fn vector_inputs() -> Result<Vec<VectorInput>> {
    load_vectors()?
        .iter()
        .map(|v| {
            serde_json::from_slice(&v.input).with_context(|| {
                format!("vector {} ({}): input is not a VectorInput", v.name, v.file)
            })
        })
        .collect()
}

/// A start input whose op needs a round (a well-formed cookie of the
/// default name), so it stays in flight until it gets replies.
fn waiting_load() -> Vec<u8> {
    format!(
        r#"{{"now":1,"op":{{"load":{{"cookie":"sid={}"}}}}}}"#,
        "A".repeat(43)
    )
    .into_bytes()
}

const TIMEOUT: &[u8] = br#"{"kind":"timeout"}"#;

/// The module and the native [`Driver`] it wraps, called in lockstep: every
/// answer must be the same bytes (divergences are collected; a trap ends the
/// test at once).
struct Twins {
    abi: Abi,
    driver: Driver,
    divergences: Vec<String>,
}

impl Twins {
    fn new() -> Result<Self> {
        Ok(Twins {
            abi: Abi::new()?,
            driver: Driver::default(),
            divergences: Vec::new(),
        })
    }

    fn both(
        &mut self,
        what: &str,
        input: &[u8],
        call: impl Fn(&mut dyn Packed) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let wasm =
            call(&mut self.abi).with_context(|| format!("trap on {what} ({})", preview(input)))?;
        let native = call(&mut self.driver)?;
        if wasm != native && self.divergences.len() < 20 {
            self.divergences.push(format!(
                "{what} ({}): wasm and native answers differ\n  native: {}\n  wasm:   {}",
                preview(input),
                preview(&native),
                preview(&wasm)
            ));
        }
        Ok(wasm)
    }

    fn configure(&mut self, what: &str, config: &[u8]) -> Result<Vec<u8>> {
        self.both(what, config, |h| h.configure(config))
    }

    fn start(&mut self, what: &str, input: &[u8]) -> Result<(u32, Vec<u8>)> {
        let out = self.both(what, input, |h| h.start(input))?;
        let (n, step) = split_start(&out)?;
        Ok((n, step.to_vec()))
    }

    fn step(&mut self, what: &str, op: u32, replies: &[u8]) -> Result<Vec<u8>> {
        self.both(what, replies, |h| h.step(op, replies))
    }

    fn fail(&mut self, what: &str, op: u32, failure: &[u8]) -> Result<Vec<u8>> {
        self.both(what, failure, |h| h.fail(op, failure))
    }

    fn drop_op(&mut self, op: u32) -> Result<()> {
        self.abi.drop_op(op)?;
        self.driver.drop_op(op);
        Ok(())
    }

    /// Start `input`, which must wait for replies; its op number.
    fn start_waiting(&mut self, what: &str, input: &[u8]) -> Result<u32> {
        let (n, step) = self.start(what, input)?;
        ensure!(
            n != 0 && done_json(&step)?.is_none(),
            "{what}: expected an op waiting on a round, got op {n}: {}",
            preview(&step)
        );
        Ok(n)
    }
}

/// Garbage packed replies: fixed pathological buffers, random bytes, and
/// truncated or byte-flipped encodings of the vectors' real replies.
fn hostile_replies(vectors: &[VectorInput]) -> Vec<(String, Vec<u8>)> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let valid: Vec<Vec<u8>> = vectors
        .iter()
        .flat_map(|v| v.replies.iter())
        .map(|replies| {
            let mut b = Vec::new();
            wire::encode_replies(replies, &mut b);
            b
        })
        .collect();
    let one = 1u32.to_le_bytes();
    let mut deep = one.to_vec();
    for _ in 0..DEEP {
        deep.push(5);
        deep.extend_from_slice(&one);
    }
    deep.push(0);
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a count and no reply", one.to_vec()),
        (
            "u32::MAX replies",
            [&u32::MAX.to_le_bytes()[..], &[0]].concat(),
        ),
        ("unknown tag", [&one[..], &[9]].concat()),
        (
            "bulk longer than the buffer",
            [&one[..], &[2], &u32::MAX.to_le_bytes(), b"x"].concat(),
        ),
        (
            "array of u32::MAX",
            [&one[..], &[5], &u32::MAX.to_le_bytes()].concat(),
        ),
        ("truncated integer", [&one[..], &[1, 7, 7]].concat()),
        (
            "invalid utf-8 simple",
            [&one[..], &[3, 2, 0, 0, 0, 0xff, 0xfe]].concat(),
        ),
        ("arrays 10k deep", deep),
        ("trailing byte", vec![0, 0, 0, 0, 0]),
        ("1 MiB random", rng.bytes(MIB)),
    ];
    let mut out: Vec<(String, Vec<u8>)> =
        fixed.into_iter().map(|(n, b)| (n.to_owned(), b)).collect();
    for i in 0..200 {
        let len = rng.below(64);
        out.push((format!("random replies #{i}"), rng.bytes(len)));
    }
    for i in 0..200 {
        if let Some(b) = rng.pick(&valid) {
            let cut = rng.below(b.len());
            out.push((
                format!("truncated replies #{i}"),
                b.get(..cut).unwrap_or_default().to_vec(),
            ));
        }
    }
    for i in 0..200 {
        if let Some(b) = rng.pick(&valid) {
            let mut b = b.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len());
                let byte = rng.bytes(1).first().copied().unwrap_or(0);
                if let Some(slot) = b.get_mut(at) {
                    *slot = byte;
                }
            }
            out.push((format!("byte-flipped replies #{i}"), b));
        }
    }
    out
}

/// Hostile input to every packed export — calls before configure, garbage
/// config and start JSON, garbage packed replies and failure JSON, unknown
/// op numbers, more ops in flight than the module keeps — never traps, is
/// answered with typed errors, and is answered exactly as the native
/// [`Driver`] answers it.
#[test]
fn hostile_packed_calls_do_not_trap() -> Result<()> {
    let vectors = vector_inputs()?;
    let mut t = Twins::new()?;
    let started = Instant::now();
    let load = waiting_load();
    let usage = |step: &[u8]| -> Result<()> {
        let code = error_code(step)?;
        ensure!(code == "usage", "expected a usage error, got {code}");
        Ok(())
    };

    // Before sl_configure: typed usage errors, nothing kept.
    let (n, step) = t.start("sl_start before sl_configure", &load)?;
    ensure!(n == 0, "an op numbered {n} before configure");
    usage(&step)?;
    usage(&t.step("sl_step before sl_configure", 1, &[0, 0, 0, 0])?)?;
    usage(&t.step("sl_step 0 before sl_configure", 0, b"garbage")?)?;
    usage(&t.fail("sl_fail before sl_configure", 1, TIMEOUT)?)?;
    usage(&t.fail("sl_fail garbage before sl_configure", 7, b"\xff{")?)?;
    for n in [0, 1, u32::MAX] {
        t.drop_op(n)?;
    }

    // Garbage config: `{"ok":true}` or a typed error, never a trap.
    let mut config_seeds: Vec<Value> = vectors.iter().map(|v| v.config.clone()).collect();
    config_seeds.push(serde_json::json!({}));
    config_seeds.extend(builtin_seeds());
    let configs = hostile_inputs(&config_seeds);
    for (what, config) in &configs {
        let out = t.configure(&format!("sl_configure {what}"), config)?;
        let answer: Value = serde_json::from_slice(&out)
            .with_context(|| format!("sl_configure {what}: not JSON: {}", preview(&out)))?;
        let typed = answer.get("ok") == Some(&Value::Bool(true))
            || answer.pointer("/error/code").is_some_and(Value::is_string);
        ensure!(
            typed,
            "sl_configure {what}: neither ok nor a typed error: {answer}"
        );
    }
    ensure!(t.configure("sl_configure {}", b"{}")? == br#"{"ok":true}"#);

    // Garbage start input; an op that does start is then fed garbage (or
    // dropped), so every kind of step meets a live op.
    let mut start_seeds: Vec<Value> = vectors
        .iter()
        .map(|v| serde_json::json!({ "now": v.now, "entropy": v.entropy, "op": v.op }))
        .collect();
    start_seeds.extend(builtin_seeds());
    let starts = hostile_inputs(&start_seeds);
    let replies = hostile_replies(&vectors);
    let mut live = 0usize;
    for (i, (what, input)) in starts.iter().enumerate() {
        let what = format!("sl_start {what}");
        let (n, step) = t.start(&what, input)?;
        let Some(outcome) = done_json(&step)? else {
            live += 1;
            let next = match i % 3 {
                0 => {
                    let (w, garbage) = &replies[i % replies.len()];
                    t.step(&format!("{what}, then sl_step {w}"), n, garbage)?
                }
                1 => t.fail(&format!("{what}, then sl_fail"), n, input)?,
                _ => {
                    t.drop_op(n)?;
                    continue;
                }
            };
            if done_json(&next)?.is_none() {
                t.drop_op(n)?;
            }
            continue;
        };
        ensure!(n == 0, "{what}: op {n} is done at once but was kept");
        ensure!(
            outcome.get("ok").is_some()
                || outcome.pointer("/error/code").is_some_and(Value::is_string),
            "{what}: neither ok nor a typed error: {outcome}"
        );
    }
    ensure!(live > 0, "no hostile start input started an op");

    // Garbage packed replies to a live op: a usage error when they do not
    // decode (the op is then gone), the core's own answer otherwise.
    for (what, garbage) in &replies {
        let n = t.start_waiting("sl_start (load)", &load)?;
        let what = format!("sl_step {what}");
        let step = t.step(&what, n, garbage)?;
        if wire::decode_replies(garbage).is_err() {
            usage(&step).with_context(|| what.clone())?;
        } else if done_json(&step)?.is_none() {
            t.drop_op(n)?;
        }
    }

    // Garbage failure JSON: still the typed backend error.
    let failure_seeds = vec![
        serde_json::json!({"kind": "timeout"}),
        serde_json::json!({"kind": "unavailable", "detail": "refused"}),
        serde_json::json!({"kind": "other", "detail": "x"}),
    ];
    for (what, failure) in hostile_inputs(&failure_seeds).iter().step_by(4) {
        let n = t.start_waiting("sl_start (load)", &load)?;
        let what = format!("sl_fail {what}");
        let code = error_code(&t.fail(&what, n, failure)?).with_context(|| what.clone())?;
        ensure!(
            code.starts_with("backend"),
            "{what}: expected a backend error, got {code}"
        );
    }

    // Op numbers that are not in flight: never started, finished, dropped.
    let n = t.start_waiting("sl_start (load)", &load)?;
    t.fail("sl_fail (finishes it)", n, TIMEOUT)?;
    let gone = t.start_waiting("sl_start (load)", &load)?;
    t.drop_op(gone)?;
    for op in [0, n, gone, 2, 4096, 4097, 0x8000_0000, u32::MAX] {
        usage(&t.step(&format!("sl_step to op {op}"), op, &[0, 0, 0, 0])?)?;
        usage(&t.fail(&format!("sl_fail to op {op}"), op, TIMEOUT)?)?;
        t.drop_op(op)?;
    }

    // More ops than the module keeps in flight: a typed refusal, and room
    // again once they are dropped.
    let mut kept = Vec::new();
    let refused = loop {
        let (n, step) = t.start("sl_start (one op too many)", &load)?;
        if n == 0 {
            break step;
        }
        kept.push(n);
        ensure!(kept.len() <= 4096, "more than 4096 ops kept in flight");
    };
    usage(&refused)?;
    ensure!(
        kept.len() == 4096,
        "refused after {} ops, expected 4096",
        kept.len()
    );
    for n in kept {
        t.drop_op(n)?;
    }
    let n = t.start_waiting("sl_start after dropping them", &load)?;
    t.drop_op(n)?;

    eprintln!(
        "wasm-abi: {} hostile configs, {} starts, {} reply buffers through the packed exports \
         in {:?}, linear memory now {} MiB",
        configs.len(),
        starts.len(),
        replies.len(),
        started.elapsed(),
        t.abi.memory_bytes() / MIB
    );
    ensure!(
        t.driver.in_flight() == 0,
        "the test left {} ops in flight",
        t.driver.in_flight()
    );
    ensure!(
        t.divergences.is_empty(),
        "{} hostile packed calls answered differently (first 20 shown):\n\n{}",
        t.divergences.len(),
        t.divergences.join("\n\n")
    );
    Ok(())
}

#[test]
fn repeated_packed_calls_do_not_leak() -> Result<()> {
    let vectors = vector_inputs()?;
    let load = waiting_load();
    let mut abi = Abi::new()?;
    // Every vector (configure, start, steps, a failure, ops left waiting
    // and dropped), an op dropped mid-way, one failed, refused input.
    let cycle = |abi: &mut Abi, times: usize| -> Result<usize> {
        for _ in 0..times {
            for v in &vectors {
                replay_packed(abi, v)?;
            }
            abi.configure(b"{}")?;
            let (n, _) = split_start(&abi.start(&load)?)?;
            abi.drop_op(n)?;
            let (n, _) = split_start(&abi.start(&load)?)?;
            abi.fail(n, TIMEOUT)?;
            abi.start(b"{not json")?;
            abi.step(12_345, b"\x01")?;
            abi.configure(b"[]")?;
        }
        Ok(abi.memory_bytes())
    };
    let warm = cycle(&mut abi, 3)?;
    let after = cycle(&mut abi, 100)?;
    ensure!(
        after == warm,
        "linear memory grew from {warm} to {after} bytes over 100 identical cycles of packed \
         calls: an op, an engine or a buffer is not freed"
    );
    Ok(())
}
