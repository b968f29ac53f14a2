//! Reading libtest output as it streams by, to count tests and name the failures.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

/// Totals over every test binary a `cargo test` run executed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Names of failed tests (`test NAME ... FAILED`).
    pub failures: Vec<String>,
}

impl TestCounts {
    /// Folds one line of libtest output into the totals.
    pub fn observe(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.passed += count_before(rest, "passed");
            self.failed += count_before(rest, "failed");
            self.ignored += count_before(rest, "ignored");
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures.push(name.to_string());
        }
    }
}

/// In `ok. 3 passed; 1 failed; ...`, the number written before `label`.
fn count_before(text: &str, label: &str) -> u64 {
    let body = text.split_once(". ").map_or(text, |(_, body)| body);
    body.split(';')
        .filter_map(|part| part.trim().strip_suffix(label))
        .find_map(|number| number.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `cmd` (a `cargo test`), echoing its stdout while counting; stderr passes through.
pub fn run_counting(cmd: &mut Command) -> Result<(ExitStatus, TestCounts)> {
    let line = crate::proc::describe(cmd);
    println!("$ {line}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        for text in BufReader::new(stdout).lines() {
            let text = text.with_context(|| format!("reading the output of `{line}`"))?;
            counts.observe(&text);
            // A closed stdout (e.g. `| head`) must not stop the tests.
            let _ = writeln!(out, "{text}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    Ok((status, counts))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn totals_and_failures_are_collected() {
        let mut counts = TestCounts::default();
        for line in [
            "running 3 tests",
            "test ipam::allocates ... ok",
            "test ipam::wraps ... FAILED",
            "test slow ... ignored",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 1.20s",
        ] {
            counts.observe(line);
        }
        assert_eq!(counts.passed, 5);
        assert_eq!(counts.failed, 1);
        assert_eq!(counts.ignored, 1);
        assert_eq!(counts.failures, vec!["ipam::wraps".to_string()]);
    }

    #[test]
    fn unrelated_lines_change_nothing() {
        let mut counts = TestCounts::default();
        counts.observe("test result: garbage");
        counts.observe("   Compiling weir-cni v0.1.0");
        assert_eq!(counts, TestCounts::default());
    }
}
