//! The brokers under test: Starling and Mosquitto started as child processes on 127.0.0.1 with
//! free ports and the same limits, their resident memory, their logs and how they exited.

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::mqtt::Client;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Starling,
    Mosquitto,
}

impl Kind {
    pub const BOTH: [Kind; 2] = [Kind::Starling, Kind::Mosquitto];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Starling => "Starling",
            Kind::Mosquitto => "Mosquitto",
        })
    }
}

/// The limits both brokers get, so that neither drops or throttles what the other would not.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Outbound QoS 1/2 messages in flight per client (Starling `limits.max_inflight`,
    /// Mosquitto `max_inflight_messages`).
    pub max_inflight: u16,
    /// Messages queued per client beyond the inflight window (Starling
    /// `limits.max_queued_messages`, Mosquitto `max_queued_messages`).
    pub max_queued: usize,
    /// `$SYS` update period in seconds (Starling `sys.interval_secs`, Mosquitto `sys_interval`).
    pub sys_interval: u64,
}

/// Where the two brokers' programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub starling: PathBuf,
    pub mosquitto: PathBuf,
}

/// Starling's configuration file; listeners, data directory and log level come as flags.
pub fn starling_config(s: &Settings) -> String {
    format!(
        "[limits]\nmax_inflight = {}\nmax_queued_messages = {}\n\n[sys]\ninterval_secs = {}\n",
        s.max_inflight, s.max_queued, s.sys_interval
    )
}

/// The flags Starling is started with, besides `--config`.
pub fn starling_flags(mqtt: &str, ws: &str, data_dir: &str) -> Vec<String> {
    ["--mqtt-bind", mqtt, "--ws-bind", ws, "--data-dir", data_dir, "--log-level", "warn"].map(String::from).to_vec()
}

/// Mosquitto's whole configuration file. Logging is cut to errors and warnings to match
/// Starling's `--log-level warn`; TCP_NODELAY is set on client sockets as Starling does.
pub fn mosquitto_config(s: &Settings, port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_inflight_messages {}\n\
         max_queued_messages {}\n\
         set_tcp_nodelay true\n\
         sys_interval {}\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n",
        s.max_inflight, s.max_queued, s.sys_interval
    )
}

fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// A broker process under test. Dropping it kills the process.
pub struct Broker {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a broker run ended.
#[derive(Debug, Default, Clone)]
pub struct Stopped {
    /// Set when the process was gone before it was asked to stop, or did not stop cleanly.
    pub problem: Option<String>,
    /// Lines of its log at warning level or above (both brokers log nothing less).
    pub log_lines: Vec<String>,
}

impl Broker {
    /// Starts a fresh broker with an empty data directory and waits until it accepts MQTT.
    pub async fn start(kind: Kind, bins: &Binaries, settings: &Settings) -> Result<Broker> {
        let dir = tempfile::Builder::new().prefix("starling-bench-").tempdir()?;
        let addr = free_addr()?;
        let log_path = dir.path().join(format!("{}.log", kind.to_string().to_lowercase()));
        let log = File::create(&log_path)?;
        let mut cmd = match kind {
            Kind::Starling => {
                let config = dir.path().join("starling.toml");
                std::fs::write(&config, starling_config(settings))?;
                let mut c = Command::new(&bins.starling);
                c.arg("--config").arg(&config);
                let data = dir.path().join("data");
                c.args(starling_flags(&addr.to_string(), &free_addr()?.to_string(), &data.display().to_string()));
                // Plain text log lines (no colour codes) so they can be read back.
                c.env("NO_COLOR", "1");
                c
            }
            Kind::Mosquitto => {
                let config = dir.path().join("mosquitto.conf");
                std::fs::write(&config, mosquitto_config(settings, addr.port()))?;
                let mut c = Command::new(&bins.mosquitto);
                c.arg("-c").arg(&config);
                c
            }
        };
        // Keep the operator's STARLING_* settings out of the comparison.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STARLING_") {
                cmd.env_remove(&k);
            }
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {kind} ({:?})", cmd.get_program()))?;
        let mut broker = Broker { kind, addr, child, log_path, _dir: dir };
        broker.wait_ready().await?;
        Ok(broker)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited while starting ({status}); its log:\n{}", self.kind, self.log_tail());
            }
            match Client::connect(self.addr, "bench-probe", 60, Duration::from_secs(2)).await {
                Ok(c) => {
                    c.disconnect().await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    bail!("{} did not accept MQTT on {} within 15s: {e:#}\n{}", self.kind, self.addr, self.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited unexpectedly ({status}); its log:\n{}", self.kind, self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then up to 10 s for a clean exit (SIGKILL after that); returns what went wrong.
    pub async fn stop(mut self) -> Stopped {
        let mut out = Stopped::default();
        match self.child.try_wait() {
            Ok(Some(status)) => out.problem = Some(format!("{} had exited before the stop ({status})", self.kind)),
            _ => {
                if let Ok(pid) = libc::pid_t::try_from(self.pid()) {
                    // SAFETY: plain kill(2) on our own child's pid; it has not been reaped yet.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) if status.success() => break,
                        Ok(Some(status)) => {
                            out.problem = Some(format!("{} exited with {status} on SIGTERM", self.kind));
                            break;
                        }
                        Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                        _ => {
                            let _ = self.child.kill();
                            let _ = self.child.wait();
                            out.problem = Some(format!("{} did not stop within 10s of SIGTERM; killed", self.kind));
                            break;
                        }
                    }
                }
            }
        }
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        out.log_lines = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11..13).context("short /proc/PID/stat")?.iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// First line of `mosquitto -h`, e.g. "mosquitto version 2.0.11".
pub fn mosquitto_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            text.lines().find(|l| l.contains("version")).map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `starling-broker --version`.
pub fn starling_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_configs_carry_the_same_limits() {
        let s = Settings { max_inflight: 100, max_queued: 5000, sys_interval: 10 };
        let st = starling_config(&s);
        assert!(st.contains("max_inflight = 100") && st.contains("max_queued_messages = 5000"), "{st}");
        let mo = mosquitto_config(&s, 1884);
        assert!(mo.starts_with("listener 1884 127.0.0.1\n"), "{mo}");
        assert!(mo.contains("max_inflight_messages 100") && mo.contains("max_queued_messages 5000"), "{mo}");
    }

    #[test]
    fn own_rss_and_cpu_time_are_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
