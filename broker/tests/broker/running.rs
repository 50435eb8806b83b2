//! Running `starling-broker`: with no arguments it serves on its embedded defaults (TCP 1883,
//! WebSocket 8083 at `/mqtt` with subprotocol `mqtt`, admin API 8081, data under `./data`), and
//! `STARLING_*` environment variables and command-line flags override the config file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{self, next, settle, v5c};
use crate::harness::free_port;

/// A broker process started with arguments and environment of the test's choosing; killed on drop.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn start(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = cwd.join(format!("broker-{}.log", free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling-broker"));
        cmd.current_dir(cwd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")));
        // Only the variables this test sets: nothing inherited may change the outcome.
        for (k, _) in std::env::vars() {
            if k.starts_with("STARLING_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc { child: cmd.spawn().expect("start starling-broker"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every address accepts TCP connections (20 s at most).
    fn wait_listening(&mut self, addrs: &[SocketAddr]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("broker exited at start with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("broker did not listen on {addrs:?} within 20 s: {}", self.log());
    }

    /// SIGTERM and a graceful exit within 20 s.
    fn terminate(mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 request; returns the response head and body as text.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    s.write_all(request.as_bytes()).expect("send request");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).expect("response");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn no_arguments_serves_tcp_1883_websocket_8083_mqtt_and_admin_8081_on_embedded_defaults() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let tcp: SocketAddr = ([127, 0, 0, 1], 1883).into();
    let ws: SocketAddr = ([127, 0, 0, 1], 8083).into();
    let admin: SocketAddr = ([127, 0, 0, 1], 8081).into();
    for a in [tcp, ws, admin] {
        assert!(TcpStream::connect(a).is_err(), "{a} is already in use: this test needs the default ports free");
    }
    let mut b = Proc::start(cwd.path(), &[], &[]);
    b.wait_listening(&[tcp, ws, admin]);

    // MQTT over TCP on 1883 and over WebSocket on 8083 at /mqtt, carrying messages to each other.
    let mut sub = clients::v4(tcp, "defaults-sub", true).await;
    sub.client.subscribe("defaults/t", rumqttc::QoS::AtLeastOnce).await.expect("subscribe");
    settle().await;
    let ws_pub = clients::v5(ws, "defaults-ws-pub", |o| {
        *o = v5c::MqttOptions::new("defaults-ws-pub", format!("ws://{ws}/mqtt"), ws.port());
        o.set_transport(rumqttc::Transport::Ws);
    })
    .await;
    ws_pub.client.publish("defaults/t", v5c::QoS::AtLeastOnce, false, "over ws").await.expect("publish");
    let m = next(&mut sub.rx).await.expect("message from the WebSocket listener on 8083");
    assert_eq!(&m.payload[..], b"over ws");

    // The WebSocket upgrade echoes subprotocol `mqtt` on `/mqtt`.
    let upgrade = http(
        ws,
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    );
    assert!(upgrade.starts_with("HTTP/1.1 101"), "{upgrade}");
    assert!(upgrade.to_ascii_lowercase().contains("sec-websocket-protocol: mqtt"), "{upgrade}");

    // The admin API on 8081.
    let health = http(admin, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"ok\""), "{health}");

    // The default data directory is `data` under the working directory.
    assert!(cwd.path().join("data").join("starling.redb").is_file(), "store not created under ./data");
    drop(sub);
    drop(ws_pub);
    assert!(b.terminate(), "graceful exit on SIGTERM");
}

/// A config file binding MQTT over TCP to `file_port`, other listeners on free ports.
fn config_file(dir: &Path, file_port: u16) -> std::path::PathBuf {
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        format!(
            "[listeners.tcp]\nbind = \"127.0.0.1:{file_port}\"\n[listeners.ws]\nbind = \"127.0.0.1:{}\"\n\
             [admin]\nbind = \"127.0.0.1:{}\"\n[store]\ndata_dir = \"{}\"\n",
            free_port(),
            free_port(),
            dir.join("data").display()
        ),
    )
    .expect("write config");
    path
}

/// Whether an MQTT client gets a CONNACK on `port`.
async fn mqtt_answers_on(port: u16, id: &str) -> bool {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return false;
    }
    let c = clients::v5(([127, 0, 0, 1], port).into(), id, |_| {}).await;
    c.connack.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
}

#[tokio::test]
async fn environment_variable_overrides_the_config_file_and_a_flag_overrides_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = config_file(dir.path(), file_port);
    let config = config.to_str().expect("utf-8 path");
    let env = [("STARLING_LISTENERS__TCP__BIND", format!("127.0.0.1:{env_port}"))];

    // The file says `file_port`, the environment `env_port`: the environment wins.
    let mut b = Proc::start(dir.path(), &["--config", config], &env);
    b.wait_listening(&[([127, 0, 0, 1], env_port).into()]);
    assert!(mqtt_answers_on(env_port, "env").await, "MQTT on the port from STARLING_LISTENERS__TCP__BIND");
    assert!(!mqtt_answers_on(file_port, "file").await, "the config file's port must be overridden");
    assert!(b.terminate(), "graceful exit");

    // Add the flag `--mqtt-bind`: it wins over the environment and the file.
    let flag = format!("127.0.0.1:{flag_port}");
    let mut b = Proc::start(dir.path(), &["--config", config, "--mqtt-bind", &flag], &env);
    b.wait_listening(&[([127, 0, 0, 1], flag_port).into()]);
    assert!(mqtt_answers_on(flag_port, "flag").await, "MQTT on the port from --mqtt-bind");
    assert!(!mqtt_answers_on(env_port, "env2").await, "the environment's port must be overridden by the flag");
    assert!(!mqtt_answers_on(file_port, "file2").await, "the config file's port must be overridden by the flag");
    assert!(b.terminate(), "graceful exit");
}
