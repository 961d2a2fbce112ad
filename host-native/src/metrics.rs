//! Counters for `/metrics`: operations by name and outcome (or error code),
//! backend errors, and round latency. Labels are fixed vocabularies (op names,
//! outcome names, error codes), never IDs or user input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use session_logic::conformance::VectorOp;
use session_logic::{Entropy, Error, Outcome, UnixMillis};

use crate::executor::Backend;
use crate::rules::{Rules, RulesError};

/// Shared counters. Cheap to update from many tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    ops: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    backend_errors: AtomicU64,
    latency_micros_sum: AtomicU64,
    latency_count: AtomicU64,
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
        let started = std::time::Instant::now();
        let result = rules.run(op, now, entropy, backend).await;
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
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
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
        out.push_str("# HELP session_op_duration_seconds Time to run an operation, all rounds.\n");
        out.push_str("# TYPE session_op_duration_seconds summary\n");
        let sum = self.latency_micros_sum.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "session_op_duration_seconds_sum {}.{:06}",
            sum / 1_000_000,
            sum % 1_000_000
        );
        let _ = writeln!(
            out,
            "session_op_duration_seconds_count {}",
            self.latency_count.load(Ordering::Relaxed)
        );
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
        assert!(text.contains("session_op_duration_seconds_sum 1.500000"));
    }
}
