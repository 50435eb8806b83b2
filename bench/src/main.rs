//! `starling-bench`: runs Starling and Mosquitto side by side on loopback (throughput, latency,
//! idle-connection memory), prints the figures with their ratio and writes BENCHMARKS.md.

mod brokers;
mod mqtt;
mod report;
mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

use brokers::{Binaries, Broker, Kind, Settings};
use report::{Better, Row, Target};
use scenarios::{Latency, LatencyResult, MemoryResult, Throughput, ThroughputResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Throughput,
    Latency,
    Memory,
}

/// Measures Starling against Mosquitto on this machine over loopback and writes BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(name = "starling-bench", version)]
struct Args {
    /// Short smoke run (seconds): fewer messages, 1,000 idle connections, one run, no BENCHMARKS.md
    /// unless --output is given.
    #[arg(long)]
    quick: bool,
    /// Runs of every measurement per broker (default 3, 1 with --quick); medians are reported.
    #[arg(long)]
    runs: Option<usize>,
    /// The starling-broker program (default: next to this program).
    #[arg(long)]
    starling: Option<PathBuf>,
    /// The mosquitto program.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// Where to write the report (default BENCHMARKS.md; none with --quick).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print only, write no report.
    #[arg(long, conflicts_with = "output")]
    no_output: bool,
    /// The command to name in the report as the one that produced it (scripts/bench.sh sets it).
    #[arg(long)]
    invoked_as: Option<String>,
    /// Only these parts (comma-separated); the report says which were left out.
    #[arg(long, value_delimiter = ',', default_value = "throughput,latency,memory")]
    only: Vec<Part>,
    /// Publishers in the fan-in scenarios.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Subscribers in the fan-out scenarios.
    #[arg(long, default_value_t = 16)]
    subscribers: usize,
    /// Payload bytes per message (at least 16: send time, publisher, sequence number).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// QoS 1 PUBLISHes a publisher keeps in flight in the throughput scenarios.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Messages per second in the latency scenario.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Idle connections in the memory scenario (default 10,000; 1,000 with --quick).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Both brokers' outbound inflight window per client.
    #[arg(long, default_value_t = 1000)]
    max_inflight: u16,
    /// Both brokers' per-client queue limit.
    #[arg(long, default_value_t = 1_000_000)]
    max_queued: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// Everything one invocation measures.
struct Plan {
    runs: usize,
    throughput: Vec<(String, Throughput)>,
    latency: Latency,
    idle_connections: usize,
    memory_timeout: Duration,
    settle: Duration,
}

impl Plan {
    fn new(a: &Args) -> Plan {
        let scale = if a.quick { 10 } else { 1 };
        let timeout = Duration::from_secs(if a.quick { 20 } else { 60 });
        let (p, s) = (a.publishers, a.subscribers);
        let tp = |figure: String, publishers, subscribers, qos, per_publisher: u64| {
            (
                figure,
                Throughput {
                    publishers,
                    subscribers,
                    qos,
                    per_publisher: (per_publisher / scale).max(1),
                    window: a.window,
                    payload: a.payload,
                    idle: Duration::from_secs(3),
                    timeout,
                },
            )
        };
        // Per-publisher counts sized for a few seconds per run on a 2-core machine.
        let fan_in = |n: u64| n / p.max(1) as u64;
        let fan_out = |n: u64| n / s.max(1) as u64;
        let throughput = vec![
            tp(format!("Fan-in QoS 0, {p} pub → 1 sub (msg/s)"), p, 1, 0, fan_in(800_000)),
            tp(format!("Fan-in QoS 1, {p} pub → 1 sub (msg/s)"), p, 1, 1, fan_in(240_000)),
            tp(format!("Fan-out QoS 0, 1 pub → {s} sub (msg/s)"), 1, s, 0, fan_out(800_000)),
            tp(format!("Fan-out QoS 1, 1 pub → {s} sub (msg/s)"), 1, s, 1, fan_out(320_000)),
        ];
        let latency_secs = if a.quick { 1.0 } else { 5.0 };
        Plan {
            runs: a.runs.unwrap_or(if a.quick { 1 } else { 3 }).max(1),
            throughput,
            latency: Latency {
                rate: a.rate,
                count: (a.rate * latency_secs) as u64,
                warmup: (a.rate * 0.5) as u64,
                payload: a.payload,
                timeout: Duration::from_secs_f64(latency_secs * 3.0 + 20.0),
            },
            idle_connections: a.idle_connections.unwrap_or(if a.quick { 1_000 } else { 10_000 }),
            memory_timeout: Duration::from_secs(120),
            settle: Duration::from_millis(if a.quick { 500 } else { 2000 }),
        }
    }
}

fn idx(k: Kind) -> usize {
    match k {
        Kind::Starling => 0,
        Kind::Mosquitto => 1,
    }
}

/// What every run of both brokers produced.
#[derive(Default)]
struct Collected {
    throughput: Vec<[Vec<ThroughputResult>; 2]>,
    /// Sorted latencies of each run, per broker.
    latency_ns: [Vec<Vec<u64>>; 2],
    latency_lost: [u64; 2],
    out_of_order: [u64; 2],
    latency_failed: [bool; 2],
    memory: [Vec<MemoryResult>; 2],
    problems: Vec<String>,
    /// Log lines (timestamps stripped) and how often each came, per broker.
    log_lines: [BTreeMap<String, usize>; 2],
}

enum Job<'a> {
    Throughput(&'a Throughput),
    Latency(&'a Latency),
    Memory,
}

enum Outcome {
    Throughput(ThroughputResult),
    Latency(LatencyResult),
    Memory(MemoryResult),
}

struct Bench {
    bins: Binaries,
    settings: Settings,
    plan: Plan,
    got: Collected,
    /// Load averages (/proc/loadavg) before and after the run.
    load: [String; 2],
}

/// Log line without its leading timestamp, so repeats can be counted.
fn strip_timestamp(line: &str) -> String {
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => rest.trim().to_string(),
        _ => line.to_string(),
    }
}

impl Bench {
    /// Starts a fresh broker, runs one measurement, stops it and keeps what went wrong.
    async fn run(&mut self, kind: Kind, what: &str, job: Job<'_>) -> Result<Outcome> {
        let mut broker = Broker::start(kind, &self.bins, &self.settings).await?;
        let addr = broker.addr;
        let result = match job {
            Job::Throughput(t) => {
                let pid = broker.pid();
                let cpu_before = brokers::cpu_seconds(pid).unwrap_or(0.0);
                scenarios::throughput(addr, t).await.map(|mut r| {
                    r.broker_cpu_secs = brokers::cpu_seconds(pid).map_or(0.0, |c| c - cpu_before);
                    Outcome::Throughput(r)
                })
            }
            Job::Latency(l) => scenarios::latency(addr, l).await.map(Outcome::Latency),
            Job::Memory => {
                let pid = broker.pid();
                let p = &self.plan;
                scenarios::idle_memory(addr, p.idle_connections, 64, p.settle, p.memory_timeout, || {
                    brokers::rss_kib(pid)
                })
                .await
                .map(Outcome::Memory)
            }
        };
        if let Err(e) = broker.check_alive() {
            self.got.problems.push(format!("{what}: {e:#}"));
        }
        let stopped = broker.stop().await;
        if let Some(p) = stopped.problem {
            self.got.problems.push(format!("{what}: {p}"));
        }
        for l in stopped.log_lines {
            *self.got.log_lines[idx(kind)].entry(strip_timestamp(&l)).or_default() += 1;
        }
        if let Err(e) = &result {
            self.got.problems.push(format!("{what}, {kind}: {e:#}"));
        }
        result
    }

    /// Both brokers, alternating which goes first from run to run.
    fn order(run: usize) -> [Kind; 2] {
        if run.is_multiple_of(2) { Kind::BOTH } else { [Kind::Mosquitto, Kind::Starling] }
    }

    async fn throughput(&mut self) {
        let scenarios = self.plan.throughput.clone();
        for (figure, t) in &scenarios {
            let mut per_broker: [Vec<ThroughputResult>; 2] = Default::default();
            for run in 0..self.plan.runs {
                for kind in Self::order(run) {
                    let what = format!("{figure}, run {}/{}", run + 1, self.plan.runs);
                    if let Ok(Outcome::Throughput(r)) = self.run(kind, &what, Job::Throughput(t)).await {
                        eprintln!(
                            "{what}, {kind}: {} msg/s, {} of {} delivered in {:.2}s, broker CPU {:.0}% of one core{}",
                            report::group(r.rate(), 0),
                            report::group(r.received as f64, 0),
                            report::group(r.expected as f64, 0),
                            r.elapsed.as_secs_f64(),
                            100.0 * r.broker_cpu_secs / r.elapsed.as_secs_f64().max(1e-9),
                            if r.incomplete { " (INCOMPLETE)" } else { "" }
                        );
                        self.got.out_of_order[idx(kind)] += r.out_of_order;
                        if r.lost() > 0 {
                            self.got.problems.push(format!(
                                "{what}, {kind}: {} of {} deliveries lost",
                                r.lost(),
                                r.expected
                            ));
                        }
                        per_broker[idx(kind)].push(r);
                    } else {
                        eprintln!("{what}, {kind}: failed");
                    }
                }
            }
            self.got.throughput.push(per_broker);
        }
    }

    async fn latency(&mut self) {
        let l = self.plan.latency.clone();
        for run in 0..self.plan.runs {
            for kind in Self::order(run) {
                let what = format!("Latency, run {}/{}", run + 1, self.plan.runs);
                match self.run(kind, &what, Job::Latency(&l)).await {
                    Ok(Outcome::Latency(LatencyResult { latencies_ns: mut v, lost, out_of_order })) => {
                        v.sort_unstable();
                        self.got.out_of_order[idx(kind)] += out_of_order;
                        eprintln!(
                            "{what}, {kind}: p50 {} µs, p99 {} µs over {} messages, {lost} lost",
                            scenarios::percentile(&v, 50.0) / 1000,
                            scenarios::percentile(&v, 99.0) / 1000,
                            v.len()
                        );
                        self.got.latency_ns[idx(kind)].push(v);
                        self.got.latency_lost[idx(kind)] += lost;
                        if lost > 0 {
                            self.got.problems.push(format!("{what}, {kind}: {lost} messages lost"));
                        }
                    }
                    _ => {
                        eprintln!("{what}, {kind}: failed");
                        self.got.latency_failed[idx(kind)] = true;
                    }
                }
            }
        }
    }

    /// Per run, "p50/p99" in µs, for one broker.
    fn latency_per_run(&self, kind: Kind) -> String {
        let runs = &self.got.latency_ns[idx(kind)];
        let each: Vec<String> = runs
            .iter()
            .map(|v| format!("{}/{}", scenarios::percentile(v, 50.0) / 1000, scenarios::percentile(v, 99.0) / 1000))
            .collect();
        if each.is_empty() { "none".into() } else { each.join(", ") }
    }

    async fn memory(&mut self) {
        for run in 0..self.plan.runs {
            for kind in Self::order(run) {
                let what = format!("Idle connections, run {}/{}", run + 1, self.plan.runs);
                if let Ok(Outcome::Memory(m)) = self.run(kind, &what, Job::Memory).await {
                    eprintln!(
                        "{what}, {kind}: RSS {} KiB before, {} KiB with {} connections: {:.2} KiB each",
                        report::group(m.before_kib as f64, 0),
                        report::group(m.after_kib as f64, 0),
                        report::group(m.connections as f64, 0),
                        m.per_connection_kib()
                    );
                    self.got.memory[idx(kind)].push(m);
                } else {
                    eprintln!("{what}, {kind}: failed");
                }
            }
        }
    }

    /// How busy each broker was in the throughput runs, and what it got done per CPU-second.
    fn cpu_rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for ((figure, _), results) in self.plan.throughput.iter().zip(&self.got.throughput) {
            let name = figure.trim_end_matches(" (msg/s)");
            let busy = |i: usize| {
                median(
                    results[i].iter().map(|r| 100.0 * r.broker_cpu_secs / r.elapsed.as_secs_f64().max(1e-9)).collect(),
                )
            };
            let per_cpu = |i: usize| {
                median(
                    results[i]
                        .iter()
                        .filter(|r| r.broker_cpu_secs > 0.0)
                        .map(|r| r.received as f64 / r.broker_cpu_secs)
                        .collect(),
                )
            };
            rows.push(Row {
                figure: format!("{name}: broker CPU (% of one core)"),
                starling: busy(0),
                mosquitto: busy(1),
                decimals: 0,
                better: Better::Lower,
                target: Target::None,
            });
            rows.push(Row {
                figure: format!("{name}: deliveries per broker CPU-second"),
                starling: per_cpu(0),
                mosquitto: per_cpu(1),
                decimals: 0,
                better: Better::Higher,
                target: Target::None,
            });
        }
        rows
    }

    fn rows(&self, parts: &[Part]) -> Vec<Row> {
        let mut rows = Vec::new();
        let both = |f: &dyn Fn(usize) -> Option<f64>| (f(0), f(1));
        if parts.contains(&Part::Throughput) {
            for ((figure, _), results) in self.plan.throughput.iter().zip(&self.got.throughput) {
                let (s, m) = both(&|i| median(results[i].iter().map(ThroughputResult::rate).collect()));
                rows.push(Row {
                    figure: figure.clone(),
                    starling: s,
                    mosquitto: m,
                    decimals: 0,
                    better: Better::Higher,
                    target: Target::Ahead,
                });
            }
        }
        if parts.contains(&Part::Latency) {
            let rate = report::group(self.plan.latency.rate, 0);
            for (name, p, target) in
                [("p50", 50.0, Target::None), ("p99", 99.0, Target::NoWorse), ("max (worst run)", 100.0, Target::None)]
            {
                let (s, m) = both(&|i| {
                    let runs = &self.got.latency_ns[i];
                    if self.got.latency_failed[i] || runs.iter().any(Vec::is_empty) {
                        return None;
                    }
                    let per_run: Vec<f64> = runs.iter().map(|v| scenarios::percentile(v, p) as f64 / 1000.0).collect();
                    if p >= 100.0 { per_run.into_iter().reduce(f64::max) } else { median(per_run) }
                });
                rows.push(Row {
                    figure: format!("Latency {name}, QoS 1 at {rate} msg/s (µs)"),
                    starling: s,
                    mosquitto: m,
                    decimals: 0,
                    better: Better::Lower,
                    target,
                });
            }
        }
        if parts.contains(&Part::Memory) {
            let n = report::group(self.plan.idle_connections as f64, 0);
            let mem = &self.got.memory;
            let (s, m) = both(&|i| median(mem[i].iter().map(|r| r.before_kib as f64 / 1024.0).collect()));
            rows.push(Row {
                figure: "RSS, broker started, no clients (MiB)".into(),
                starling: s,
                mosquitto: m,
                decimals: 1,
                better: Better::Lower,
                target: Target::None,
            });
            let (s, m) = both(&|i| median(mem[i].iter().map(|r| r.after_kib as f64 / 1024.0).collect()));
            rows.push(Row {
                figure: format!("RSS with {n} idle connections (MiB)"),
                starling: s,
                mosquitto: m,
                decimals: 1,
                better: Better::Lower,
                target: Target::None,
            });
            let (s, m) = both(&|i| median(mem[i].iter().map(MemoryResult::per_connection_kib).collect()));
            rows.push(Row {
                figure: "Memory per idle connection (KiB)".into(),
                starling: s,
                mosquitto: m,
                decimals: 2,
                better: Better::Lower,
                target: Target::NoWorse,
            });
        }
        if parts.contains(&Part::Throughput) || parts.contains(&Part::Latency) {
            let (s, m) = both(&|i| {
                let tp: u64 = self.got.throughput.iter().flat_map(|r| &r[i]).map(ThroughputResult::lost).sum();
                Some((tp + self.got.latency_lost[i]) as f64)
            });
            rows.push(Row {
                figure: "Messages lost, all runs".into(),
                starling: s,
                mosquitto: m,
                decimals: 0,
                better: Better::Lower,
                target: Target::None,
            });
        }
        rows
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Raises the open-file limit so that `needed` sockets fit, in this process and in the brokers
/// it starts (they inherit it).
fn raise_nofile_limit(needed: libc::rlim_t) -> Result<libc::rlim_t> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
        }
        let want = needed.max(lim.rlim_cur);
        if want > lim.rlim_max {
            // Only root may raise the hard limit; try, and fall back to the hard limit.
            let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(want);
            }
        }
        lim.rlim_cur = want.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
        }
    }
    if lim.rlim_cur < needed {
        bail!(
            "the open-file limit is {} (hard) but {needed} are needed; raise it (ulimit -Hn) or pass a smaller \
             --idle-connections",
            lim.rlim_cur
        );
    }
    Ok(lim.rlim_cur)
}

/// `path` relative to the working directory when it lies under it.
fn relative(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|d| path.strip_prefix(d).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

fn default_starling() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("starling-broker")))
        .unwrap_or_else(|| PathBuf::from("target/release/starling-broker"))
}

/// This invocation as a shell command, with paths under the working directory made relative.
fn this_command() -> String {
    let cwd = std::env::current_dir().ok();
    std::env::args()
        .map(|a| match &cwd {
            Some(d) => Path::new(&a).strip_prefix(d).map_or(a.clone(), |p| p.display().to_string()),
            None => a,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.payload < mqtt::PAYLOAD_HEADER {
        bail!("--payload must be at least {} bytes", mqtt::PAYLOAD_HEADER);
    }
    if args.rate <= 0.0 || args.runs == Some(0) || args.publishers == 0 || args.subscribers == 0 || args.window == 0 {
        bail!("--rate, --runs, --publishers, --subscribers and --window must be positive");
    }
    let plan = Plan::new(&args);
    raise_nofile_limit(plan.idle_connections as libc::rlim_t + 1024)?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    rt.block_on(run(args, plan))
}

async fn run(args: Args, plan: Plan) -> Result<()> {
    let bins = Binaries {
        starling: args.starling.clone().unwrap_or_else(default_starling),
        mosquitto: args.mosquitto.clone(),
    };
    if !bins.starling.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p starling-broker) or pass --starling",
            bins.starling.display()
        );
    }
    if !bins.mosquitto.is_file() {
        bail!(
            "{} not found: run ./scripts/setup.sh (Debian package mosquitto) or pass --mosquitto",
            bins.mosquitto.display()
        );
    }
    let settings = Settings { max_inflight: args.max_inflight, max_queued: args.max_queued, sys_interval: 10 };
    let started = Instant::now();
    let load_before = report::load_average();
    if load_before.split_whitespace().next().and_then(|l| l.parse::<f64>().ok()).is_some_and(|l| l > 0.5) {
        eprintln!(
            "warning: load average is {load_before} before the run; other work on this machine skews the figures"
        );
    }
    let mut bench = Bench { bins, settings, plan, got: Collected::default(), load: [load_before, String::new()] };
    let parts = args.only.clone();
    if parts.contains(&Part::Throughput) {
        bench.throughput().await;
    }
    if parts.contains(&Part::Latency) {
        bench.latency().await;
    }
    if parts.contains(&Part::Memory) {
        bench.memory().await;
    }
    bench.load[1] = report::load_average();
    let rows = bench.rows(&parts);
    let table = report::table(&rows);
    let verdict = report::verdict(&rows);
    println!();
    println!("{table}");
    println!(
        "Ratio = Starling/Mosquitto; \"Better\" says which direction is better. Medians of {} run(s).",
        bench.plan.runs
    );
    if parts.contains(&Part::Latency) {
        println!(
            "Latency per run, p50/p99 in µs: Starling {}; Mosquitto {}.",
            bench.latency_per_run(Kind::Starling),
            bench.latency_per_run(Kind::Mosquitto)
        );
    }
    let cpu_table = parts.contains(&Part::Throughput).then(|| report::table(&bench.cpu_rows()));
    if let Some(t) = &cpu_table {
        println!(
            "\nBroker CPU in the throughput runs (medians; Mosquitto is single-threaded, Starling may use every core):\n"
        );
        println!("{t}");
    }
    println!("Targets (ahead on throughput, p99 no worse, memory per connection no larger): {verdict}.");
    println!("Broker problems:\n{}", problems_text(&bench.got));
    eprintln!("benchmark took {:.0}s", started.elapsed().as_secs_f64());

    let output = match (&args.output, args.no_output, args.quick) {
        (_, true, _) => None,
        (Some(p), _, _) => Some(p.clone()),
        (None, false, false) => Some(PathBuf::from("BENCHMARKS.md")),
        (None, false, true) => None,
    };
    if let Some(path) = output {
        let body = markdown(&args, &bench, &parts, &table, cpu_table.as_deref(), &verdict);
        report::write_keeping_notes(&path, &body)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn problems_text(got: &Collected) -> String {
    let mut out = String::new();
    if got.problems.is_empty() && got.log_lines.iter().all(BTreeMap::is_empty) && got.out_of_order == [0, 0] {
        return "None: no crash, no failed run, no message lost, repeated or out of order, nothing at warning level \
                or above in either broker's log.\n"
            .into();
    }
    for kind in Kind::BOTH {
        let n = got.out_of_order[idx(kind)];
        if n > 0 {
            out.push_str(&format!(
                "- {kind} delivered {n} message(s) out of their publisher's order (repeated or skipped)\n"
            ));
        }
    }
    for p in &got.problems {
        out.push_str(&format!("- {}\n", p.replace('\n', "\n  ")));
    }
    for kind in Kind::BOTH {
        let lines = &got.log_lines[idx(kind)];
        if lines.is_empty() {
            continue;
        }
        let total: usize = lines.values().sum();
        out.push_str(&format!("- {kind} logged {total} line(s) at warning level or above; distinct ones:\n"));
        for (line, n) in lines.iter().take(10) {
            out.push_str(&format!("  - {n}× `{}`\n", line.replace('`', "'")));
        }
        if lines.len() > 10 {
            out.push_str(&format!("  - … and {} more distinct lines\n", lines.len() - 10));
        }
    }
    out
}

fn markdown(args: &Args, bench: &Bench, parts: &[Part], table: &str, cpu_table: Option<&str>, verdict: &str) -> String {
    let plan = &bench.plan;
    let s = &bench.settings;
    let mut md = String::new();
    let cmd = this_command();
    let invoked = match &args.invoked_as {
        Some(script) => format!("`{script}`, which ran `{cmd}`"),
        None => format!("`{cmd}`"),
    };
    md.push_str("# Benchmarks: Starling and Mosquitto\n\n");
    md.push_str(&format!(
        "Produced by {invoked} on {}. Both brokers ran on this machine, one at a time, each as a fresh process per \
         run, listening on 127.0.0.1; the load came from the same client code for both (`bench/`, a minimal MQTT \
         3.1.1 client on tokio with {} worker thread(s)).\n\n",
        report::now_utc(),
        args.client_threads.max(1)
    ));
    md.push_str("## Results\n\n");
    md.push_str(table);
    md.push_str(&format!(
        "\nRatio = Starling/Mosquitto; \"Better\" says which direction is better. Every figure is the median of \
         {runs} run(s) per broker (a fresh broker process each): throughput is messages received by the subscribers \
         per second (from the start signal to the last delivery); latency p50 and p99 are the medians of each run's \
         percentiles, max is the worst run's.\n\n",
        runs = plan.runs
    ));
    if parts.contains(&Part::Latency) {
        md.push_str(&format!(
            "Latency per run, p50/p99 in µs: Starling {}; Mosquitto {}.\n\n",
            bench.latency_per_run(Kind::Starling),
            bench.latency_per_run(Kind::Mosquitto)
        ));
    }
    if let Some(t) = cpu_table {
        md.push_str(
            "Broker CPU in the throughput runs (from /proc/PID/stat; medians): Mosquitto is single-threaded, Starling \
             may use every core, and the load generator shares the same cores.\n\n",
        );
        md.push_str(t);
        md.push('\n');
    }
    md.push_str(&format!(
        "Targets from the issue (ahead of Mosquitto on every throughput figure, p99 no worse, memory per idle \
         connection no larger): {verdict}.\n\n"
    ));
    if parts.len() < 3 {
        let names: Vec<String> = parts.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
        md.push_str(&format!("Only these parts were run: {}.\n\n", names.join(", ")));
    }
    md.push_str("## Machine and versions\n\n");
    for (k, v) in report::machine_facts() {
        md.push_str(&format!("- {k}: {v}\n"));
    }
    md.push_str(&format!(
        "- Load average (1, 5, 15 min) before the run: {}; after: {}\n",
        bench.load[0], bench.load[1]
    ));
    md.push_str(&format!(
        "- Starling: {} (`{}`, release build)\n",
        brokers::starling_version(&bench.bins.starling),
        relative(&bench.bins.starling)
    ));
    md.push_str(&format!(
        "- Mosquitto: {} (`{}`, Debian package `mosquitto`)\n\n",
        brokers::mosquitto_version(&bench.bins.mosquitto),
        bench.bins.mosquitto.display()
    ));
    md.push_str("## Scenarios\n\n");
    md.push_str(&format!(
        "All clients speak MQTT 3.1.1 with clean sessions; every message has a {}-byte payload that starts with its \
         send time (nanoseconds on a monotonic clock shared by publishers and subscribers), publisher and sequence \
         number. Every run has a hard time limit; a subscriber that receives nothing for 3 s counts the rest as \
         lost.\n\n",
        args.payload
    ));
    let throughput = if parts.contains(&Part::Throughput) { plan.throughput.as_slice() } else { &[] };
    for (figure, t) in throughput {
        md.push_str(&format!(
            "- {figure}: {} {} messages at QoS {} to one topic as fast as the broker takes them ({}), {} at QoS {} \
             receive{} {} deliveries in all{}; limit {} s.\n",
            if t.publishers == 1 {
                "1 publisher sends".to_string()
            } else {
                format!("{} publishers each send", t.publishers)
            },
            report::group(t.per_publisher as f64, 0),
            t.qos,
            if t.qos == 0 {
                "64 PUBLISHes per write".to_string()
            } else {
                format!("at most {} unacknowledged per publisher", t.window)
            },
            if t.subscribers == 1 { "1 subscriber".to_string() } else { format!("{} subscribers", t.subscribers) },
            t.qos,
            if t.subscribers == 1 { "s" } else { "" },
            report::group((t.per_publisher * t.publishers as u64 * t.subscribers as u64) as f64, 0),
            if t.qos == 1 { ", each acknowledged with PUBACK" } else { "" },
            t.timeout.as_secs()
        ));
    }
    let l = &plan.latency;
    if parts.contains(&Part::Latency) {
        md.push_str(&format!(
            "- Latency: one publisher sends QoS 1 messages one at a time at a fixed {} msg/s ({} s, after {} warm-up \
         messages that are not counted) to one QoS 1 subscriber; latency is the subscriber's read time minus the \
         send time in the payload.\n",
            report::group(l.rate, 0),
            l.count as f64 / l.rate,
            l.warmup
        ));
    }
    if parts.contains(&Part::Memory) {
        md.push_str(&format!(
            "- Idle connections: {} clients connect (CONNECT with keep-alive 600 s, 64 connecting at a time) and then \
         stay idle; the broker's VmRSS (/proc/PID/status) is read {:.1} s after it started and {:.1} s after the \
         last CONNACK. Per connection = (after − before) / connections. The open-file limit is raised in-process \
         and inherited by the brokers.\n",
            report::group(plan.idle_connections as f64, 0),
            plan.settle.as_secs_f64(),
            plan.settle.as_secs_f64()
        ));
    }
    md.push('\n');
    md.push_str(&format!(
        "Method notes: the load generator runs in one process on the same {} cores as the broker under test (its \
         publishers and the throughput subscribers share one tokio runtime with {} worker thread(s); the latency \
         subscriber has a thread of its own, as a separate client would). Mosquitto is single-threaded; Starling \
         runs a tokio runtime with one worker per core. Brokers alternate which goes first from run to run. \
         Throughput counts are fixed, so the faster broker's runs are shorter.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.client_threads.max(1)
    ));
    md.push_str("## Broker settings\n\n");
    md.push_str(
        "The same limits for both: outbound inflight window and per-client queue raised so that neither broker \
         throttles or drops what the other would not; TCP_NODELAY on client sockets (Starling always sets it); \
         logging at warning level and above; no persistence of messages (clean sessions, Mosquitto `persistence \
         false`); `$SYS` every 10 s. Everything else is each broker's default.\n\n",
    );
    md.push_str("Starling: `starling-broker --config starling.toml ");
    md.push_str(&brokers::starling_flags("127.0.0.1:PORT", "127.0.0.1:PORT2", "TMPDIR/data").join(" "));
    md.push_str("` (ports picked free at run time), with `starling.toml`:\n\n```toml\n");
    md.push_str(&brokers::starling_config(s));
    md.push_str("```\n\nMosquitto: `mosquitto -c mosquitto.conf` with:\n\n```\n");
    md.push_str(&brokers::mosquitto_config(s, 0).replacen("listener 0 ", "listener PORT ", 1));
    md.push_str("```\n\n");
    md.push_str("## Broker problems seen during the run\n\n");
    md.push_str(&problems_text(&bench.got));
    md
}
