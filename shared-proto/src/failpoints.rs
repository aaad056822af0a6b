//! Failpoints runtime (harness builds only: feature `failpoints`; node start -> [failpoints]).
//!
//! The nodes name points before and after each durable step (`orderer::failpoints`,
//! `peer::failpoints` list them); this module arms them from the `FAILPOINTS` environment
//! variable once, at process start, and decides what a point that fires does:
//!
//! | action  | what happens at the point                                                     |
//! |---------|-------------------------------------------------------------------------------|
//! | `crash` | the process exits at once with [`CRASH_EXIT_CODE`]: no destructor, no flush, no graceful stop (a SIGKILL there) |
//! | `error` | the step returns an I/O error through its module's normal error path          |
//!
//! `FAILPOINTS="NAME=ACTIONS;NAME=ACTIONS"`, as the `fail` crate reads it; `crash` and `error`
//! stand for `return(crash)` and `return(error)`, so the crate's prefixes and chains work too:
//! `3*off->crash` fires on the fourth pass, `50%error` on half of them. Any other `fail` action
//! (`sleep(MS)`, `pause`, `print(MSG)`) works as documented there.
//!
//! Promises: a malformed `FAILPOINTS` is an error at start (never a panic mid-run); without
//! the feature, neither this module nor any call site compiles.

pub use fail;

/// The environment variable naming the failpoints to arm.
pub const ENV: &str = "FAILPOINTS";

/// Exit code of a process a `crash` failpoint ended: distinct from a normal failure (1), a
/// Rust panic (101) and a signal, so a harness knows the process died where it was told to.
pub const CRASH_EXIT_CODE: i32 = 86;

/// `FAILPOINTS` could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum FailpointsError {
    #[error("{ENV}: {entry:?} is not NAME=ACTIONS")]
    Malformed { entry: String },
    #[error("{ENV}: {name}: {reason}")]
    Actions { name: String, reason: String },
}

/// Arms every failpoint `FAILPOINTS` names and logs each (the process start calls it once,
/// after logging is set up).
pub fn init_from_env() -> Result<(), FailpointsError> {
    let Ok(spec) = std::env::var(ENV) else {
        return Ok(());
    };
    for (name, actions) in configure(&spec)? {
        tracing::warn!(failpoint = %name, %actions, "failpoint armed");
    }
    Ok(())
}

/// Arms the failpoints of `spec` (`NAME=ACTIONS;...`, the shorthands expanded).
pub fn configure(spec: &str) -> Result<Vec<(String, String)>, FailpointsError> {
    let mut armed = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry
            .split_once('=')
            .map(|(n, a)| (n.trim(), a.trim()))
            .filter(|(n, a)| !n.is_empty() && !a.is_empty())
            .ok_or_else(|| FailpointsError::Malformed {
                entry: entry.to_owned(),
            })?;
        let actions = expand(actions);
        fail::cfg(name, &actions).map_err(|reason| FailpointsError::Actions {
            name: name.to_owned(),
            reason,
        })?;
        armed.push((name.to_owned(), actions));
    }
    Ok(armed)
}

/// `crash` / `error` (after any `P%` and `N*` prefix) -> `return(crash)` / `return(error)`.
fn expand(actions: &str) -> String {
    actions
        .split("->")
        .map(|task| {
            let task = task.trim();
            let body_at = task.rfind(['%', '*']).map_or(0, |i| i + 1);
            let (prefix, body) = task.split_at(body_at);
            match body {
                "crash" | "error" => format!("{prefix}return({body})"),
                _ => task.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("->")
}

/// What a fired failpoint `name` does with its `return` argument: `crash` ends the process
/// here; anything else is returned as the I/O error the step fails with.
pub fn fired(name: &str, arg: Option<String>) -> std::io::Error {
    if arg.as_deref() == Some("crash") {
        // Straight to stderr (the node's log file): the tracing writer may be buffered.
        eprintln!("failpoint {name}: crash (exit code {CRASH_EXIT_CODE})");
        std::process::exit(CRASH_EXIT_CODE);
    }
    tracing::error!(failpoint = name, "failpoint: injected I/O error");
    std::io::Error::other(format!("injected I/O error at failpoint {name}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shorthands_expand_after_prefixes_and_in_chains() {
        assert_eq!(expand("crash"), "return(crash)");
        assert_eq!(expand("error"), "return(error)");
        assert_eq!(expand("3*off->crash"), "3*off->return(crash)");
        assert_eq!(expand("50%error"), "50%return(error)");
        assert_eq!(expand("20%2*crash"), "20%2*return(crash)");
        assert_eq!(expand("sleep(10)"), "sleep(10)");
    }

    #[test]
    fn error_action_returns_an_io_error_naming_the_point() {
        configure("shared::test_point::before=error").unwrap();
        let step = || -> std::io::Result<()> {
            fail::fail_point!("shared::test_point::before", |arg| Err(fired(
                "shared::test_point::before",
                arg
            )));
            Ok(())
        };
        let err = step().unwrap_err();
        assert!(
            err.to_string().contains("shared::test_point::before"),
            "{err}"
        );
        fail::remove("shared::test_point::before");
        step().unwrap();
    }

    #[test]
    fn malformed_spec_is_an_error_not_a_panic() {
        assert!(matches!(
            configure("no_equals_sign"),
            Err(FailpointsError::Malformed { .. })
        ));
        assert!(matches!(
            configure("p=bogus(action"),
            Err(FailpointsError::Actions { .. })
        ));
    }
}
