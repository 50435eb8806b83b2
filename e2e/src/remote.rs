//! A Mosquitto process on the host, listening on the host's address as the cluster's pods see
//! it: the remote broker that the demo's and the tests' Bridges connect to.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// The port the demo's remote broker listens on (beside, not on, 1883).
pub const REMOTE_PORT: u16 = 18830;

/// A running Mosquitto (Debian package), stopped and cleaned up when dropped.
pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    pub ip: String,
    pub port: u16,
}

impl Mosquitto {
    /// Starts Mosquitto on `ip:port` (anonymous access, no persistence) and waits until it
    /// accepts connections.
    pub fn start(ip: &str, port: u16) -> Result<Mosquitto> {
        let dir = std::env::temp_dir().join(format!("starling-e2e-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} {ip}\nallow_anonymous true\npersistence false\n"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (Debian package mosquitto)")?;
        let m = Mosquitto { child, dir, ip: ip.to_string(), port };
        crate::wait::until(Duration::from_secs(10), format!("mosquitto on {ip}:{port}"), || {
            Ok(crate::mqtt::tcp_answers(ip, port, Duration::from_secs(1)).then_some(()))
        })?;
        Ok(m)
    }

    /// The Bridge `server` that reaches it.
    pub fn url(&self) -> String {
        format!("mqtt-tcp://{}:{}", self.ip, self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
