//! Test harness: real `starling-broker` processes on loopback ports with their own data
//! directory and config, started, stopped (SIGTERM), killed (`kill -9`) and restarted.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port free now and never handed out before in this test process: the kernel may give the
/// same ephemeral port to two `bind(0)` calls in a row, and two listeners of one test must differ.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct BrokerProc {
    child: Option<Child>,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub tls: Option<SocketAddr>,
    /// The management API.
    pub admin: SocketAddr,
    pub dir: TempDir,
    config: PathBuf,
    restarts: u32,
}

impl BrokerProc {
    /// Starts a broker with the base config plus `extra` TOML (sections other than
    /// `node`, `listeners.tcp`, `listeners.ws`, `store`, `log`).
    pub fn start(extra: &str) -> BrokerProc {
        Self::start_node("test-node", [127, 0, 0, 1], extra)
    }

    /// Starts a broker named `name` whose listeners bind loopback address `ip` (127.0.0.x).
    /// A port picked free can be taken before the broker binds it (by another test's client
    /// socket, say): then it starts again on new ports, twice at most.
    pub fn start_node(name: &str, ip: [u8; 4], extra: &str) -> BrokerProc {
        for _ in 0..2 {
            let mut b = Self::configure(name, ip, extra);
            match b.try_spawn() {
                Ok(()) => return b,
                Err(log) if log.contains("in use") => eprintln!("a port was taken meanwhile; starting again: {log}"),
                Err(log) => panic!("{log}"),
            }
        }
        let mut b = Self::configure(name, ip, extra);
        b.spawn();
        b
    }

    fn configure(name: &str, ip: [u8; 4], extra: &str) -> BrokerProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let tcp: SocketAddr = (ip, free_port()).into();
        let ws: SocketAddr = (ip, free_port()).into();
        let tls = extra.contains("[listeners.tls]").then(|| extra_tls_addr(extra));
        let admin: SocketAddr = (ip, free_port()).into();
        // The admin section always gets this node's port; a test may add keys to it.
        let extra = if extra.contains("[admin]\n") {
            extra.replace("[admin]\n", &format!("[admin]\nbind = \"{admin}\"\n"))
        } else {
            format!("{extra}\n[admin]\nbind = \"{admin}\"\n")
        };
        let config = dir.path().join("broker.toml");
        let data = dir.path().join("data");
        let text = format!(
            "[node]\nname = \"{name}\"\n\n[listeners.tcp]\nenabled = true\nbind = \"{tcp}\"\n\n\
             [listeners.ws]\nenabled = true\nbind = \"{ws}\"\npath = \"/mqtt\"\n\n\
             [store]\ndata_dir = \"{}\"\n\n[log]\nlevel = \"debug\"\n\n{extra}\n",
            data.display()
        );
        std::fs::write(&config, text).expect("write config");
        BrokerProc { child: None, tcp, ws, tls, admin, dir, config, restarts: 0 }
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("{log}");
        }
    }

    /// Starts the process and waits until it listens; `Err` with its log if it could not.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = File::create(self.dir.path().join(format!("broker-{}.log", self.restarts))).expect("log file");
        self.restarts += 1;
        let child = Command::new(env!("CARGO_BIN_EXE_starling-broker"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start starling-broker");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.tcp).is_ok() && std::net::TcpStream::connect(self.admin).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("broker exited at start with {status}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("broker did not listen on {} within 20s: {}", self.tcp, self.log()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Everything the broker logged so far (all runs).
    pub fn log(&self) -> String {
        (0..self.restarts)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("broker-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has exited (and reaps it).
    pub fn exited_within(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until the node answers on its MQTT and admin ports again (after an in-process restart).
    pub fn wait_listening(&mut self) {
        if let Err(log) = self.wait_ready() {
            panic!("{log}");
        }
    }

    /// Starts again on the same ports and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.spawn();
    }
}

fn extra_tls_addr(extra: &str) -> SocketAddr {
    let section = &extra[extra.find("[listeners.tls]").unwrap_or(0)..];
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("bind = ").map(|v| v.trim_matches('"').parse().expect("tls bind")))
        .expect("tls bind in [listeners.tls]")
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
