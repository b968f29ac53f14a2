//! `cargo xtask test`: lint, setup, build, unit tests, then the root-only integration tests,
//! with a summary at the end. Every stage that can run does, so one run shows every failure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::compile::{self, Built, Scope};
use crate::test_log::{self, TestCounts};
use crate::{paths, privilege, proc, setup};

pub struct Options {
    /// Run `cargo fmt --check` and `cargo clippy -D warnings` first.
    pub lint: bool,
    /// Passed to every test binary (e.g. a name filter).
    pub test_args: Vec<String>,
}

struct StageResult {
    name: &'static str,
    elapsed: Duration,
    outcome: Result<Option<TestCounts>>,
}

pub fn run(options: &Options) -> Result<()> {
    privilege::require_root(
        "`cargo xtask test` (the integration tests create network namespaces)",
    )?;
    let mut results = Vec::new();

    // Lint first: fast, and needs nothing from setup.
    if options.lint {
        results.push(stage("fmt", || {
            proc::run(workspace_cargo()?.args(["fmt", "--all", "--", "--check"])).map(|()| None)
        }));
        // Without WEIR_EBPF_OBJ on purpose: clippy must work with the stub object.
        results.push(stage("clippy", || {
            proc::run(workspace_cargo()?.args(["clippy", "--all-targets", "--", "-D", "warnings"]))
                .map(|()| None)
        }));
    }

    results.push(stage("setup", || setup::run().map(|()| None)));
    let setup_ok = last_ok(&results);
    if setup_ok && options.lint {
        // The eBPF crate only builds for the BPF target (rust-src from setup), so the
        // workspace clippy above skips it.
        results.push(stage("clippy (eBPF)", || {
            proc::run(compile::ebpf_cargo("clippy")?.args(["--", "-D", "warnings"])).map(|()| None)
        }));
    }
    let mut built = None;
    if setup_ok {
        results.push(stage("build", || {
            built = Some(compile::run(false, Scope::BinariesAndTests)?);
            Ok(None)
        }));
    }

    if let Some(built) = &built {
        let args = &options.test_args;
        results.push(stage("unit tests", || {
            cargo_test(built, &["--lib", "--bins"], &[], args, Expect::SomeTests)
        }));
        // Compiles (and runs, unless `no_run`) the examples in the API docs, so they stay true.
        results.push(stage("doc tests", || {
            cargo_test(built, &["--doc"], &[], args, Expect::MaybeNone)
        }));
        // `--test '*'` selects only integration test targets (`--tests` would rerun the unit
        // tests). They share kernel state (netns names, the CPU), so one at a time.
        results.push(stage("integration tests", || {
            cargo_test(
                built,
                &["--test", "*"],
                &["--test-threads=1"],
                args,
                Expect::SomeTests,
            )
        }));
    }

    print_summary(&results);
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.name)
        .collect();
    if !failed.is_empty() {
        bail!("failed stages: {}", failed.join(", "));
    }
    if built.is_none() {
        bail!("the tests did not run");
    }
    Ok(())
}

fn stage(name: &'static str, body: impl FnOnce() -> Result<Option<TestCounts>>) -> StageResult {
    proc::heading(name);
    let start = Instant::now();
    let outcome = body();
    if let Err(err) = &outcome {
        println!("== {name}: FAILED: {err:#}");
    }
    StageResult {
        name,
        elapsed: start.elapsed(),
        outcome,
    }
}

fn last_ok(results: &[StageResult]) -> bool {
    results.last().is_some_and(|r| r.outcome.is_ok())
}

fn workspace_cargo() -> Result<Command> {
    let mut cmd = proc::cargo();
    cmd.current_dir(paths::workspace_root()?);
    Ok(cmd)
}

/// `cargo test --release <selection> -- <harness args> <test args>`, with the same
/// `WEIR_EBPF_OBJ` as the build (else cargo would relink the agent with the stub object into
/// target/release) and `WEIR_BIN_DIR` pointing at the freshly built binaries.
/// Whether a stage without any test is a mistake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    SomeTests,
    MaybeNone,
}

fn cargo_test(
    built: &Built,
    selection: &[&str],
    harness_args: &[&str],
    test_args: &[String],
    expect: Expect,
) -> Result<Option<TestCounts>> {
    let mut cmd = workspace_cargo()?;
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    cmd.args(["test", "--release", "--no-fail-fast"])
        .args(selection)
        .arg("--")
        .args(harness_args)
        .args(test_args)
        .env("WEIR_EBPF_OBJ", &built.ebpf_object)
        .env("WEIR_BIN_DIR", &built.bin_dir);
    let (status, counts) = test_log::run_counting(&mut cmd)?;
    if !status.success() {
        if counts.failures.is_empty() {
            bail!(
                "`cargo test` failed ({status}) before naming a failing test; see the output above"
            );
        }
        bail!(
            "{} failed, {} passed: {}",
            counts.failures.len(),
            counts.passed,
            counts.failures.join(", ")
        );
    }
    // An empty run without a filter means the selection is wrong, not that all is well.
    if counts.passed == 0 && test_args.is_empty() && expect == Expect::SomeTests {
        bail!("`{}` ran no test at all", proc::describe(&cmd));
    }
    Ok(Some(counts))
}

fn print_summary(results: &[StageResult]) {
    proc::heading("summary");
    for result in results {
        let verdict = match &result.outcome {
            Ok(Some(counts)) => format!(
                "ok      {} passed, {} ignored",
                counts.passed, counts.ignored
            ),
            Ok(None) => String::from("ok"),
            Err(err) => format!("FAILED  {}", first_line(&format!("{err:#}"))),
        };
        println!(
            "  {:<18} {:>7.1}s  {verdict}",
            result.name,
            result.elapsed.as_secs_f64()
        );
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
