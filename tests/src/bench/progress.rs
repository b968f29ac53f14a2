//! The progress lines a long benchmark prints between its parts.

use std::time::Instant;

/// Starts a part: `==> text`.
pub fn heading(text: &str) {
    println!("\n==> {text}");
}

/// How long the bench has been running since `started`.
pub fn elapsed(started: Instant) {
    println!(
        "(bench running for {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
