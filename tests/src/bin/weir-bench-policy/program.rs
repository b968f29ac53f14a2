//! Part b: compile and program at issue 4's scale. The cluster of [`objects::scale`] is read by
//! the agent's manifest reader once; then, per round and per node, a fresh `PolicyCompiler`
//! compiles that node's plan and the agent's datapath writer writes it into the empty maps of a
//! real loaded datapath (one scratch bpffs per node, as every node has its own maps). Reported:
//! compile and write times (median over rounds), the plan's size and map-memory estimate
//! (`PlanStats`), and the memory the kernel reports for each policy map (`memlock` in the map
//! fd's fdinfo, which recent kernels compute from the map's real content).

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use aya::maps::MapData;
use weir_agent::datapath::{Datapath, LoadOptions};
use weir_agent::policy::{PolicyCompiler, PolicyContext};
use weir_lab::bench::numbers;

use crate::objects::{self, Scale};
use crate::scratch::ScratchBpffs;

#[derive(Clone, Debug)]
pub struct Options {
    pub scale: Scale,
    pub rounds: u32,
}

/// One node's figures.
#[derive(Clone, Debug, Default)]
pub struct NodeFigures {
    pub node: String,
    pub endpoints: usize,
    pub identities: usize,
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    pub rules: usize,
    /// `PlanStats::map_bytes`.
    pub estimate_bytes: usize,
    /// Median seconds.
    pub compile_secs: f64,
    pub write_secs: f64,
    /// (map, kernel-reported bytes), after the write.
    pub kernel_bytes: Vec<(String, u64)>,
}

impl NodeFigures {
    pub fn total_secs(&self) -> f64 {
        self.compile_secs + self.write_secs
    }

    pub fn kernel_total(&self) -> u64 {
        self.kernel_bytes.iter().map(|(_, b)| b).sum()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub scale: Option<Scale>,
    pub rounds: u32,
    pub nodes: Vec<NodeFigures>,
}

pub fn run(object: Vec<u8>, opts: &Options) -> Result<Results> {
    ensure!(opts.rounds > 0, "at least one round");
    let started = Instant::now();
    let snapshot = objects::snapshot(&objects::scale(opts.scale)?)?;
    println!(
        "program: {} pods, {} nodes, {} policies read in {:.2} s",
        opts.scale.pods,
        opts.scale.nodes,
        opts.scale.policies,
        started.elapsed().as_secs_f64()
    );
    let mut results = Results {
        scale: Some(opts.scale),
        rounds: opts.rounds,
        nodes: Vec::new(),
    };
    for n in 1..=opts.scale.nodes {
        let node = format!("n{n}");
        let ctx = PolicyContext {
            node_name: node.clone(),
            ..PolicyContext::default()
        };
        let mut compile = Vec::new();
        let mut write = Vec::new();
        let mut figures = NodeFigures {
            node: node.clone(),
            ..NodeFigures::default()
        };
        for round in 0..opts.rounds {
            let scratch = ScratchBpffs::create(&format!("program-{node}"))?;
            let mut dp = Datapath::load_object(&object, &LoadOptions::new(scratch.path()))
                .context("loading the datapath")?;
            let t = Instant::now();
            let plan = PolicyCompiler::new().compile(&snapshot, &ctx);
            compile.push(t.elapsed().as_secs_f64());
            ensure!(
                plan.errors.is_empty(),
                "the scale policies do not compile: {:?}",
                plan.errors
            );
            let t = Instant::now();
            dp.apply_policy(&plan)
                .with_context(|| format!("writing {node}'s plan"))?;
            write.push(t.elapsed().as_secs_f64());
            if round == 0 {
                let stats = plan.stats();
                figures.endpoints = stats.endpoints;
                figures.identities = stats.identities;
                figures.ipcache_entries = stats.ipcache_entries;
                figures.policy_entries = stats.policy_entries;
                figures.rules = stats.rules;
                figures.estimate_bytes = stats.map_bytes();
                figures.kernel_bytes = kernel_bytes(&dp)?;
            }
            drop(dp);
        }
        figures.compile_secs = numbers::median(&compile);
        figures.write_secs = numbers::median(&write);
        println!(
            "program: {node}: {} endpoints, {} identities, {} ipcache + {} policy entries; \
             compile {:.1} ms + write {:.1} ms = {:.1} ms; memory ~{} KiB estimated, {} KiB reported by the kernel",
            figures.endpoints,
            figures.identities,
            figures.ipcache_entries,
            figures.policy_entries,
            figures.compile_secs * 1e3,
            figures.write_secs * 1e3,
            figures.total_secs() * 1e3,
            figures.estimate_bytes / 1024,
            figures.kernel_total() / 1024
        );
        results.nodes.push(figures);
    }
    Ok(results)
}

/// `memlock` of each policy map's fd, opened from its pin.
fn kernel_bytes(dp: &Datapath) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for name in weir_common::policy::MAPS {
        let pin = dp.pins().map(name);
        let map = MapData::from_pin(&pin)
            .with_context(|| format!("opening the pinned map {}", pin.display()))?;
        let fd = map.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .with_context(|| format!("reading the fdinfo of {name}"))?;
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("no memlock in the fdinfo of {name}"))?;
        out.push((name.to_string(), memlock));
    }
    Ok(out)
}
