//! Counters for `/metrics`: operations by name and outcome (or error code),
//! loads that found no session by reason (malformed or unknown IDs are what
//! a cookie-guessing attack looks like), backend errors, and a latency
//! histogram per operation. Labels are fixed vocabularies (op names, outcome
//! names, reasons, error codes), never IDs or user input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use session_logic::conformance::VectorOp;
use session_logic::outcome::Absent;
use session_logic::{Entropy, Error, Outcome, UnixMillis};

use crate::executor::Backend;
use crate::rules::{Rules, RulesError};

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One operation's latency distribution.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bound (not yet cumulative).
    buckets: [u64; BUCKETS.len()],
    sum_micros: u64,
    count: u64,
}

/// Shared counters. Cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    ops: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    absent: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    backend_errors: AtomicU64,
}

fn absent_name(reason: Absent) -> &'static str {
    match reason {
        Absent::NoCookie => "no_cookie",
        Absent::Malformed => "malformed",
        Absent::Unknown => "unknown",
        Absent::BindingMismatch => "binding_mismatch",
    }
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Rules::run`] `op` and count its result under the op's name.
    pub async fn run(
        &self,
        rules: &Rules,
        op: VectorOp,
        now: UnixMillis,
        entropy: Entropy,
        backend: &dyn Backend,
    ) -> Result<Outcome, RulesError> {
        let name = op.name();
        self.timed(name, rules.run(op, now, entropy, backend)).await
    }

    /// Await `op` and count its result under `name` (e.g. a [`Rules::load`]
    /// as "load").
    pub async fn timed(
        &self,
        name: &'static str,
        op: impl Future<Output = Result<Outcome, RulesError>>,
    ) -> Result<Outcome, RulesError> {
        let started = std::time::Instant::now();
        let result = op.await;
        self.record(name, &result, started.elapsed());
        result
    }

    /// Count one finished operation.
    pub fn record(&self, name: &'static str, result: &Result<Outcome, RulesError>, took: Duration) {
        let label = match result {
            Ok(outcome) => outcome.name(),
            Err(e) => {
                if matches!(e, RulesError::Session(Error::Backend(_))) {
                    self.backend_errors.fetch_add(1, Ordering::Relaxed);
                }
                e.code()
            }
        };
        *self
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name, label))
            .or_default() += 1;
        if let Ok(Outcome::None { reason, .. }) = result {
            *self
                .absent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(absent_name(*reason))
                .or_default() += 1;
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let seconds = took.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let h = latency.entry(name).or_default();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b)
            && let Some(slot) = h.buckets.get_mut(i)
        {
            *slot += 1;
        }
        h.sum_micros = h.sum_micros.saturating_add(micros);
        h.count += 1;
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP session_ops_total Session operations by name and outcome or error code.\n",
        );
        out.push_str("# TYPE session_ops_total counter\n");
        let ops = self
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for ((op, outcome), n) in ops {
            let _ = writeln!(
                out,
                "session_ops_total{{op=\"{op}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP session_backend_errors_total Operations that failed in the backend.\n",
        );
        out.push_str("# TYPE session_backend_errors_total counter\n");
        let _ = writeln!(
            out,
            "session_backend_errors_total {}",
            self.backend_errors.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP session_load_absent_total Loads that found no session, by reason \
             (malformed/unknown IDs: junk or guessed cookies).\n",
        );
        out.push_str("# TYPE session_load_absent_total counter\n");
        let absent = self
            .absent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (reason, n) in absent {
            let _ = writeln!(out, "session_load_absent_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP session_op_duration_seconds Time to run an operation, all rounds.\n");
        out.push_str("# TYPE session_op_duration_seconds histogram\n");
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (op, h) in latency {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "session_op_duration_seconds_bucket{{op=\"{op}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "session_op_duration_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "session_op_duration_seconds_sum{{op=\"{op}\"}} {}.{:06}",
                h.sum_micros / 1_000_000,
                h.sum_micros % 1_000_000
            );
            let _ = writeln!(
                out,
                "session_op_duration_seconds_count{{op=\"{op}\"}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_logic::error::BackendError;
    use session_logic::step::BackendFailure;

    #[test]
    fn render_counts_ops_and_backend_errors() {
        let m = Metrics::new();
        let err = Error::Backend(BackendError::Failure {
            failure: BackendFailure::Timeout,
        });
        m.record("load", &Err(err.into()), Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("session_ops_total{op=\"load\",outcome=\"backend_timeout\"} 1"));
        assert!(text.contains("session_backend_errors_total 1"));
        assert!(text.contains("session_op_duration_seconds_sum{op=\"load\"} 1.500000"));
        assert!(text.contains("session_op_duration_seconds_bucket{op=\"load\",le=\"1\"} 0"));
        assert!(text.contains("session_op_duration_seconds_bucket{op=\"load\",le=\"2.5\"} 1"));
        assert!(text.contains("session_op_duration_seconds_count{op=\"load\"} 1"));
    }

    #[test]
    fn loads_without_a_session_are_counted_by_reason() {
        let m = Metrics::new();
        let engine = session_logic::Engine::new(session_logic::Config::default()).unwrap();
        for reason in [Absent::Malformed, Absent::Malformed, Absent::Unknown] {
            let outcome = Outcome::None {
                reason,
                session: engine.new_session(),
            };
            m.record("load", &Ok(outcome), Duration::from_micros(300));
        }
        let text = m.render();
        assert!(
            text.contains("session_load_absent_total{reason=\"malformed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("session_load_absent_total{reason=\"unknown\"} 1"),
            "{text}"
        );
        assert!(text.contains("session_op_duration_seconds_bucket{op=\"load\",le=\"0.0005\"} 3"));
    }
}
