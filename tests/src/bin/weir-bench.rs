//! `weir-bench`: Weir's benchmarks. Run through `cargo xtask bench ...`.
//!
//! `weir-bench cni --pairs 200 --out docs/benchmarks.md` times ADD and DEL of `weir-cni` against
//! Debian's reference `ptp` + `host-local` plugins, interleaved in one run, each call a real
//! plugin process inside a node netns made for the run, each pair against its own pod netns
//! created beforehand. It prints p50/p99 per op and the weir/ref ratios, and writes them (and an
//! SVG plot) into the benchmarks document.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use weir_lab::netns::NetNs;
use weir_lab::{CniCall, CniOutput};

#[derive(Parser)]
#[command(
    name = "weir-bench",
    about = "Weir's benchmarks (run via `cargo xtask bench`)"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// ADD+DEL latency of weir-cni against the reference ptp + host-local plugins.
    Cni(cni::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().bench {
        Bench::Cni(options) => cni::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CNI ADD/DEL benchmark.
mod cni {
    use super::*;

    /// Reference plugins, as Debian's containernetworking-plugins installs them.
    const REFERENCE_DIR: &str = "/usr/lib/cni";
    /// Both plugins get the same spec version; Debian's ptp (1.1.1) speaks up to 1.0.0.
    pub const CNI_VERSION: &str = "1.0.0";
    /// The goal from the issue: weir-cni at most half the reference's time per ADD+DEL pair.
    pub const TARGET_RATIO: f64 = 0.5;

    #[derive(clap::Args)]
    pub struct Options {
        /// Measured ADD+DEL pairs per plugin.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        pairs: u32,
        /// Unmeasured pairs per plugin first (page cache, dentries, lazy kernel state).
        #[arg(long, default_value_t = 5)]
        warmup: u32,
        /// Markdown file whose "CNI ADD/DEL" section is (re)written; its plot goes to
        /// `bench/` next to it. Without it, results are only printed.
        #[arg(long)]
        out: Option<PathBuf>,
    }

    /// One plugin under test.
    pub struct Plugin {
        /// Short label for tables and plots.
        pub label: &'static str,
        exe: PathBuf,
        /// The network config the runtime passes on stdin (without `prevResult`).
        config: Value,
    }

    impl Plugin {
        fn weir(state: &Path) -> Result<Plugin> {
            let exe = weir_lab::try_bin_path("weir-cni")?;
            Ok(Plugin {
                label: "weir-cni",
                exe,
                config: json!({
                    "cniVersion": CNI_VERSION,
                    "name": "bench-weir",
                    "type": "weir-cni",
                    "ipam": {
                        "ranges": [[{"subnet": "10.251.0.0/16"}]],
                        "dataDir": state.join("ipam-weir").display().to_string(),
                    }
                }),
            })
        }

        fn reference(state: &Path) -> Result<Plugin> {
            let dir = Path::new(REFERENCE_DIR);
            for name in ["ptp", "host-local"] {
                if !dir.join(name).is_file() {
                    bail!(
                        "reference plugin {} is missing; install Debian's \
                         containernetworking-plugins (`cargo xtask setup`)",
                        dir.join(name).display()
                    );
                }
            }
            Ok(Plugin {
                label: "ptp+host-local",
                exe: dir.join("ptp"),
                // Same shape as weir-cni's model: /32-style point-to-point veth with a default
                // route via the host side; no masquerading (no iptables work on either side).
                config: json!({
                    "cniVersion": CNI_VERSION,
                    "name": "bench-ref",
                    "type": "ptp",
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.252.0.0/16"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": state.join("ipam-ref").display().to_string(),
                    }
                }),
            })
        }

        /// One plugin call, timed from spawn to exit, as a runtime experiences it.
        fn call(
            &self,
            node: &NetNs,
            command: &str,
            pod: &PodNs,
            config: &Value,
        ) -> Result<(Duration, CniOutput)> {
            let call = CniCall::new(command, &pod.container_id)
                .netns(pod.netns.path_str())
                .args(Some(weir_lab::cni::default_cni_args(
                    "bench",
                    &pod.container_id,
                )))
                .config(config);
            let start = Instant::now();
            let output = call.run(node, &self.exe)?;
            let elapsed = start.elapsed();
            let output = output.ok().with_context(|| {
                format!(
                    "{} {command} for container {} failed",
                    self.label, pod.container_id
                )
            })?;
            Ok((elapsed, output))
        }

        /// ADD then DEL (with the ADD result as `prevResult`, as libcni sends it).
        fn pair(&self, node: &NetNs, pod: &PodNs) -> Result<(Duration, Duration)> {
            let (add, added) = self.call(node, "ADD", pod, &self.config)?;
            let result = added
                .json
                .with_context(|| format!("{} ADD printed no JSON result", self.label))?;
            let has_ip = result
                .get("ips")
                .and_then(Value::as_array)
                .is_some_and(|ips| !ips.is_empty());
            if !has_ip {
                bail!("{} ADD result has no IP: {result}", self.label);
            }
            let mut del_config = self.config.clone();
            if let Some(map) = del_config.as_object_mut() {
                map.insert("prevResult".into(), result);
            }
            let (del, _) = self.call(node, "DEL", pod, &del_config)?;
            Ok((add, del))
        }
    }

    /// A pod netns created before its pair runs.
    struct PodNs {
        container_id: String,
        netns: NetNs,
    }

    /// Per-op latencies of one plugin, in run order.
    #[derive(Default)]
    pub struct Samples {
        pub add: Vec<Duration>,
        pub del: Vec<Duration>,
    }

    impl Samples {
        pub fn pairs(&self) -> Vec<Duration> {
            self.add
                .iter()
                .zip(&self.del)
                .map(|(a, d)| *a + *d)
                .collect()
        }
    }

    /// The run's scratch space under the lab's state root, so the lab's sweep removes it
    /// after a crash (its name carries our pid). Removed on drop.
    struct StateDir(PathBuf);

    impl Drop for StateDir {
        fn drop(&mut self) {
            if let Err(err) = weir_lab::sweep::remove_state_dir(&self.0) {
                eprintln!("weir-bench: {err:#}");
            }
        }
    }

    pub fn run(options: &Options) -> Result<()> {
        if !weir_lab::is_root() {
            bail!("the CNI benchmark needs root (it creates network namespaces)");
        }
        let swept = weir_lab::sweep::sweep_dead();
        if !swept.netns.is_empty() {
            println!(
                "removed {} netns left by dead lab processes",
                swept.netns.len()
            );
        }
        // Lab id `<pid>-0`: labs count from 1, so this never collides with a Lab in this process.
        let id = format!("{}-0", std::process::id());
        let state = StateDir(Path::new(weir_lab::sweep::STATE_ROOT).join(&id));
        std::fs::create_dir_all(&state.0)
            .with_context(|| format!("creating {}", state.0.display()))?;

        let plugins = [Plugin::weir(&state.0)?, Plugin::reference(&state.0)?];
        // Before the run: the load average is meant to show what else was running.
        let machine = report::Machine::probe();
        let node = NetNs::create(&format!("{}{id}-node", weir_lab::sweep::NETNS_PREFIX))?;
        let rounds = options.warmup + options.pairs;
        println!(
            "creating {} pod netns ({} pairs + {} warm-up per plugin)",
            rounds * 2,
            options.pairs,
            options.warmup
        );
        let pods = create_pods(&id, rounds, plugins.len())?;

        let mut samples: Vec<Samples> = plugins.iter().map(|_| Samples::default()).collect();
        for round in 0..rounds {
            let measured = round >= options.warmup;
            // Alternate who goes first, so neither plugin always runs right after the other.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..plugins.len()).collect()
            } else {
                (0..plugins.len()).rev().collect()
            };
            for index in order {
                let pod = pods
                    .get(round as usize * plugins.len() + index)
                    .context("pod netns list is shorter than the run")?;
                let (add, del) = plugins[index].pair(&node, pod)?;
                if measured && let Some(bucket) = samples.get_mut(index) {
                    bucket.add.push(add);
                    bucket.del.push(del);
                }
            }
            let done = round + 1;
            if measured && (done - options.warmup).is_multiple_of(25) {
                print_progress(done - options.warmup, options.pairs, &plugins, &samples);
            }
        }
        check_nothing_left(&node, &state.0)?;

        let report = report::Report::new(&plugins, &samples, options.warmup, machine);
        println!("\n{}", report.text_table());
        if let Some(out) = &options.out {
            report.write(out)?;
            println!("wrote {}", out.display());
        }
        println!("tearing down {} netns", pods.len() + 1);
        Ok(())
    }

    fn create_pods(id: &str, rounds: u32, per_round: usize) -> Result<Vec<PodNs>> {
        let total = rounds as usize * per_round;
        let mut pods = Vec::with_capacity(total);
        for n in 0..total {
            let container_id = format!("bench-{id}-{n}");
            let name = format!("{}{id}-p{n}", weir_lab::sweep::NETNS_PREFIX);
            pods.push(PodNs {
                container_id,
                netns: NetNs::create(&name)?,
            });
        }
        Ok(pods)
    }

    fn print_progress(done: u32, total: u32, plugins: &[Plugin], samples: &[Samples]) {
        let mut line = format!("pair {done}/{total}:");
        for (plugin, samples) in plugins.iter().zip(samples) {
            let p50 = stats::percentile(&samples.pairs(), 50.0).unwrap_or_default();
            line.push_str(&format!("  {} p50 {:.1} ms", plugin.label, stats::ms(p50)));
        }
        println!("{line}");
    }

    /// Every pair was ADD+DEL: no host veth may remain in the node, and no address may remain
    /// reserved in either IPAM store (only lock and `last_reserved_ip.*` files).
    fn check_nothing_left(node: &NetNs, state: &Path) -> Result<()> {
        let links = node.ip(&["-o", "link", "show"])?;
        let extra: Vec<&str> = links
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(str::trim)
            .filter(|name| *name != "lo")
            .collect();
        if !extra.is_empty() {
            bail!("links left in the node netns after all DELs: {extra:?}");
        }
        for store in ["ipam-weir", "ipam-ref"] {
            let dir = state.join(store);
            let Ok(networks) = std::fs::read_dir(&dir) else {
                continue;
            };
            for network in networks.flatten() {
                let Ok(files) = std::fs::read_dir(network.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let name = file.file_name().to_string_lossy().into_owned();
                    if name.parse::<std::net::IpAddr>().is_ok() {
                        bail!(
                            "address {name} still reserved in {} after all DELs",
                            network.path().display()
                        );
                    }
                }
            }
        }
        println!("check: no veth and no reserved address left behind");
        Ok(())
    }
}

/// Percentiles and unit conversion.
mod stats {
    use std::time::Duration;

    /// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; `None` when empty.
    pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
    }

    pub fn ms(duration: Duration) -> f64 {
        duration.as_secs_f64() * 1000.0
    }

    /// `a / b`, or NaN when `b` is zero (printed as "n/a").
    pub fn ratio(a: Duration, b: Duration) -> f64 {
        if b.is_zero() {
            f64::NAN
        } else {
            a.as_secs_f64() / b.as_secs_f64()
        }
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]
        use super::*;

        fn ms_list(values: &[u64]) -> Vec<Duration> {
            values.iter().map(|v| Duration::from_millis(*v)).collect()
        }

        #[test]
        fn nearest_rank_percentiles() {
            let samples = ms_list(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
            assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(5)));
            assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(10)));
            assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
            assert_eq!(percentile(&samples, 100.0), Some(Duration::from_millis(10)));
            assert_eq!(percentile(&[], 50.0), None);
        }

        #[test]
        fn p99_of_200_is_the_198th() {
            let samples: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
            assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(198)));
        }

        #[test]
        fn ratio_guards_division_by_zero() {
            assert!(ratio(Duration::from_millis(1), Duration::ZERO).is_nan());
            assert!(
                (ratio(Duration::from_millis(1), Duration::from_millis(4)) - 0.25).abs() < 1e-9
            );
        }
    }
}

/// The results as text, Markdown and SVG.
mod report {
    use std::process::Command;

    use weir_lab::bench_report::{self, fmt_ratio};

    use super::cni::{CNI_VERSION, Plugin, Samples, TARGET_RATIO};
    use super::*;

    /// Marks the section `weir-bench cni` owns in the benchmarks document.
    const BEGIN: &str = "<!-- weir-bench cni: begin (generated by `cargo xtask bench cni`) -->";
    const END: &str = "<!-- weir-bench cni: end -->";
    const PLOT_FILE: &str = "cni-add-del.svg";

    /// One row: an op with p50/p99 of both plugins (weir first, reference second).
    struct Row {
        op: &'static str,
        weir: [Duration; 2],
        reference: [Duration; 2],
    }

    impl Row {
        fn ratios(&self) -> [f64; 2] {
            [
                stats::ratio(self.weir[0], self.reference[0]),
                stats::ratio(self.weir[1], self.reference[1]),
            ]
        }
    }

    pub struct Report {
        rows: Vec<Row>,
        series: Vec<plot::Series>,
        pairs: u32,
        warmup: u32,
        weir_label: String,
        ref_label: String,
        machine: Machine,
    }

    fn p50_p99(samples: &[Duration]) -> [Duration; 2] {
        [
            stats::percentile(samples, 50.0).unwrap_or_default(),
            stats::percentile(samples, 99.0).unwrap_or_default(),
        ]
    }

    impl Report {
        /// `plugins[0]` is weir-cni, `plugins[1]` the reference.
        pub fn new(
            plugins: &[Plugin],
            samples: &[Samples],
            warmup: u32,
            machine: Machine,
        ) -> Report {
            let empty = Samples::default();
            let weir = samples.first().unwrap_or(&empty);
            let reference = samples.get(1).unwrap_or(&empty);
            let rows = vec![
                Row {
                    op: "ADD",
                    weir: p50_p99(&weir.add),
                    reference: p50_p99(&reference.add),
                },
                Row {
                    op: "DEL",
                    weir: p50_p99(&weir.del),
                    reference: p50_p99(&reference.del),
                },
                Row {
                    op: "pair (ADD+DEL)",
                    weir: p50_p99(&weir.pairs()),
                    reference: p50_p99(&reference.pairs()),
                },
            ];
            let label = |i: usize| plugins.get(i).map_or("?", |p| p.label).to_string();
            let series = vec![
                plot::Series::new(format!("{} ADD", label(0)), &weir.add, 0, false),
                plot::Series::new(format!("{} DEL", label(0)), &weir.del, 0, true),
                plot::Series::new(format!("{} ADD", label(1)), &reference.add, 1, false),
                plot::Series::new(format!("{} DEL", label(1)), &reference.del, 1, true),
            ];
            Report {
                rows,
                series,
                pairs: u32::try_from(weir.add.len()).unwrap_or(u32::MAX),
                warmup,
                weir_label: label(0),
                ref_label: label(1),
                machine,
            }
        }

        fn pair_ratio(&self) -> f64 {
            self.rows.last().map_or(f64::NAN, |row| row.ratios()[0])
        }

        fn verdict(&self) -> String {
            let ratio = self.pair_ratio();
            if ratio.is_nan() {
                "no ratio (no samples)".into()
            } else if ratio <= TARGET_RATIO {
                format!(
                    "{ratio:.2}x the reference's time per pair (p50); target <= {TARGET_RATIO}x: met"
                )
            } else {
                format!(
                    "{ratio:.2}x the reference's time per pair (p50); target <= {TARGET_RATIO}x: NOT met"
                )
            }
        }

        pub fn text_table(&self) -> String {
            let mut out = format!(
                "CNI ADD/DEL latency over {} pairs each (ms)\n{:<16}{:>12}{:>12}{:>12}{:>12}{:>10}{:>10}\n",
                self.pairs,
                "op",
                "weir p50",
                "weir p99",
                "ref p50",
                "ref p99",
                "p50 ratio",
                "p99 ratio"
            );
            for row in &self.rows {
                let [r50, r99] = row.ratios();
                out.push_str(&format!(
                    "{:<16}{:>12.2}{:>12.2}{:>12.2}{:>12.2}{:>10}{:>10}\n",
                    row.op,
                    stats::ms(row.weir[0]),
                    stats::ms(row.weir[1]),
                    stats::ms(row.reference[0]),
                    stats::ms(row.reference[1]),
                    fmt_ratio(r50),
                    fmt_ratio(r99),
                ));
            }
            out.push_str(&format!("weir-cni / reference: {}", self.verdict()));
            out
        }

        /// Rewrites the section in `doc` (creating the file if needed) and the plot next to it.
        pub fn write(&self, doc: &Path) -> Result<()> {
            let plot_path = bench_report::plot_dir(doc)?.join(PLOT_FILE);
            let title = format!(
                "CNI ADD/DEL latency, {} pairs each (weir-cni vs ptp+host-local)",
                self.pairs
            );
            std::fs::write(&plot_path, plot::ecdf_svg(&title, &self.series))
                .with_context(|| format!("writing {}", plot_path.display()))?;

            let date = bench_report::today_utc();
            bench_report::update_section(doc, (BEGIN, END), "CNI", |_| {
                Ok(self.markdown(&self.machine, &date))
            })
        }

        fn markdown(&self, machine: &Machine, date: &str) -> String {
            let mut md = String::new();
            md.push_str(&format!("{BEGIN}\n## CNI ADD/DEL\n\n"));
            md.push_str(&format!(
                "Measured {date} on {} ({} CPUs, kernel {}, load average {} when the run \
                 started); reference plugins: Debian containernetworking-plugins {}; weir-cni at \
                 commit {}.\n\n",
                machine.host.cpu,
                machine.host.cpus,
                machine.host.kernel,
                machine.host.load,
                machine.reference_version,
                machine.host.commit
            ));
            md.push_str(&format!(
                "| op | {w} p50 | {w} p99 | {r} p50 | {r} p99 | ratio p50 | ratio p99 |\n\
                 |---|---:|---:|---:|---:|---:|---:|\n",
                w = self.weir_label,
                r = self.ref_label
            ));
            for row in &self.rows {
                let [r50, r99] = row.ratios();
                md.push_str(&format!(
                    "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |\n",
                    row.op,
                    stats::ms(row.weir[0]),
                    stats::ms(row.weir[1]),
                    stats::ms(row.reference[0]),
                    stats::ms(row.reference[1]),
                    fmt_ratio(r50),
                    fmt_ratio(r99),
                ));
            }
            md.push_str(&format!(
                "\n**Result:** weir-cni takes {}.\n\n",
                self.verdict()
            ));
            md.push_str(&format!(
                "![CNI ADD/DEL latency distribution](bench/{PLOT_FILE})\n\n\
                 *Cumulative distribution of single-call latency: how many calls (y) finished \
                 within a given time (x). Solid: ADD, dashed: DEL.*\n\n"
            ));
            md.push_str(&format!(
                "**Method.** {pairs} ADD+DEL pairs per plugin, after {warmup} unmeasured warm-up \
                 pairs each, interleaved in one run: every round runs one weir-cni pair and one \
                 reference pair, alternating which goes first. Each call is a real plugin process \
                 started the way a container runtime starts it (`CNI_*` environment, network \
                 config on stdin, `prevResult` on DEL), with its process inside a node network \
                 namespace made for the run; every pair uses its own pod network namespace \
                 created before the run. The time is from spawning the plugin to its exit. \
                 Both plugins use spec version {CNI_VERSION} and the same model: a veth into \
                 the pod, a pod address from a /16, a default route via the host side, no \
                 masquerading. The reference is `ptp` with `host-local` IPAM (a separate process \
                 that `ptp` starts); weir-cni does its IPAM in-process. After the run the bench \
                 checks that no veth and no reserved address were left behind. Percentiles are \
                 nearest-rank; ratios are weir-cni / reference.\n\n",
                pairs = self.pairs,
                warmup = self.warmup,
            ));
            md.push_str(
                "**Reproduce** (as root, on a machine set up by `cargo xtask setup`):\n\n\
                 ```sh\n\
                 cargo xtask bench cni            # default --pairs 200\n\
                 cargo xtask bench cni --pairs 50 # quicker\n\
                 ```\n\n\
                 It builds everything, prints the table, and rewrites this section and the plot.\n",
            );
            md.push_str(&format!("{END}\n"));
            md
        }
    }

    /// What the run ran on, for the report.
    pub struct Machine {
        pub host: bench_report::Machine,
        /// The version of Debian's containernetworking-plugins.
        pub reference_version: String,
    }

    impl Machine {
        pub fn probe() -> Machine {
            Machine {
                host: bench_report::Machine::probe(&["cni-plugin"]),
                reference_version: bench_report::stdout_of(Command::new("dpkg-query").args([
                    "-W",
                    "-f=${Version}",
                    "containernetworking-plugins",
                ])),
            }
        }
    }
}

/// A cumulative-distribution plot as hand-written SVG (no plotting dependency; any browser and
/// GitHub render it, and the text stays diffable).
mod plot {
    use std::fmt::Write;
    use std::time::Duration;

    use super::stats;

    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 440.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 24.0;
    const TOP: f64 = 44.0;
    const BOTTOM: f64 = 56.0;
    /// One colour per plugin (weir, reference); colour-blind safe pair.
    const COLOURS: [&str; 2] = ["#0072B2", "#E69F00"];

    pub struct Series {
        label: String,
        sorted_ms: Vec<f64>,
        colour: usize,
        dashed: bool,
    }

    impl Series {
        pub fn new(label: String, samples: &[Duration], colour: usize, dashed: bool) -> Series {
            let mut sorted_ms: Vec<f64> = samples.iter().map(|d| stats::ms(*d)).collect();
            sorted_ms.sort_by(f64::total_cmp);
            Series {
                label,
                sorted_ms,
                colour,
                dashed,
            }
        }

        fn p99(&self) -> f64 {
            let n = self.sorted_ms.len();
            let rank = (0.99 * n as f64).ceil() as usize;
            self.sorted_ms
                .get(rank.clamp(1, n.max(1)) - 1)
                .copied()
                .unwrap_or(0.0)
        }
    }

    /// A "nice" axis step (1, 2 or 5 times a power of ten) giving about `ticks` intervals.
    pub fn nice_step(max: f64, ticks: f64) -> f64 {
        if max.is_nan() || max <= 0.0 || max.is_infinite() {
            return 1.0;
        }
        let raw = max / ticks;
        let magnitude = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude)
    }

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// The empirical CDF of each series; the x axis ends a little past the largest p99, so one
    /// outlier does not squash the plot (the curves run off the right edge instead).
    pub fn ecdf_svg(title: &str, series: &[Series]) -> String {
        let max_p99 = series.iter().map(Series::p99).fold(0.0, f64::max);
        let step = nice_step(max_p99 * 1.1, 6.0);
        let x_max = ((max_p99 * 1.1) / step).ceil().max(1.0) * step;
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let x_of = |ms: f64| LEFT + (ms / x_max).min(1.02) * plot_w;
        let y_of = |fraction: f64| TOP + (1.0 - fraction) * plot_h;

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            WIDTH / 2.0,
            escape(title)
        );
        let _ = writeln!(
            svg,
            r#"<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/></clipPath>"#
        );

        // Grid and axes.
        let mut tick = 0.0;
        while tick <= x_max + step / 2.0 {
            let x = x_of(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 18.0,
                trim_number(tick)
            );
            tick += step;
        }
        for percent in [0, 25, 50, 75, 100] {
            let y = y_of(f64::from(percent) / 100.0);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{percent}%</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            );
        }
        // The two percentiles the table reports, as dashed markers labelled inside the plot.
        for (label, fraction) in [("p50", 0.5), ("p99", 0.99)] {
            let y = y_of(fraction);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{label}</text>"##,
                LEFT + plot_w,
                LEFT + plot_w - 4.0,
                y + 14.0
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency per call (ms)</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 14.0
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">calls finished</text>"#,
            TOP + plot_h / 2.0
        );

        // Curves: a step function through (x_i, i/n).
        for s in series {
            let n = s.sorted_ms.len();
            if n == 0 {
                continue;
            }
            let mut points = format!("{:.1},{:.1}", x_of(s.sorted_ms[0]), y_of(0.0));
            for (i, ms) in s.sorted_ms.iter().enumerate() {
                let x = x_of(*ms);
                let _ = write!(
                    points,
                    " {x:.1},{:.1} {x:.1},{:.1}",
                    y_of(i as f64 / n as f64),
                    y_of((i + 1) as f64 / n as f64)
                );
            }
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline clip-path="url(#plot)" fill="none" stroke="{}" stroke-width="2"{dash} points="{points}"/>"#,
                COLOURS[s.colour % COLOURS.len()]
            );
        }

        // Legend, bottom right (the CDFs rise on the left, so it stays clear there).
        let legend_x = LEFT + plot_w - 190.0;
        let legend_y = TOP + plot_h - 18.0 * series.len() as f64 - 8.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="182" height="{:.1}" fill="white" stroke="#bbb"/>"##,
            legend_x - 6.0,
            legend_y - 14.0,
            18.0 * series.len() as f64 + 8.0
        );
        for (i, s) in series.iter().enumerate() {
            let y = legend_y + 18.0 * i as f64;
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{y:.1}">{}</text>"#,
                y - 4.0,
                legend_x + 28.0,
                y - 4.0,
                COLOURS[s.colour % COLOURS.len()],
                legend_x + 36.0,
                escape(&s.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// `5.0` -> `5`, `2.5` -> `2.5`, `0.30000000000000004` -> `0.3`.
    fn trim_number(value: f64) -> String {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]
        use super::*;

        #[test]
        fn nice_steps() {
            assert_eq!(nice_step(60.0, 6.0), 10.0);
            assert_eq!(nice_step(11.0, 6.0), 2.0);
            assert_eq!(nice_step(0.9, 6.0), 0.2);
            assert_eq!(nice_step(0.0, 6.0), 1.0);
            assert_eq!(nice_step(f64::NAN, 6.0), 1.0);
        }

        #[test]
        fn svg_has_one_curve_per_series_and_escapes_labels() {
            let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
            let series = vec![
                Series::new("a<b ADD".into(), &samples, 0, false),
                Series::new("a<b DEL".into(), &samples, 0, true),
                Series::new("empty".into(), &[], 1, false),
            ];
            let svg = ecdf_svg("t & t", &series);
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(svg.contains("a&lt;b ADD") && svg.contains("t &amp; t"));
            assert!(!svg.contains("NaN"), "{svg}");
        }

        #[test]
        fn numbers_are_trimmed() {
            assert_eq!(trim_number(5.0), "5");
            assert_eq!(trim_number(2.5), "2.5");
            assert_eq!(trim_number(0.1 + 0.2), "0.3");
        }
    }
}
