//! Listeners: MQTT over TCP, WebSocket (path `/mqtt`, subprotocol `mqtt`) and TLS, with and
//! without client-certificate verification.

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::clients::{self, next, settle, v5c};
use crate::harness::{BrokerProc, free_port};

#[tokio::test]
async fn tcp_and_websocket_listeners_carry_messages_between_each_other() {
    let b = BrokerProc::start("");
    let mut sub = clients::v5(b.ws, "ws-sub", |o| {
        // rumqttc takes the WebSocket URL as the host.
        *o = v5c::MqttOptions::new("ws-sub", format!("ws://{}/mqtt", b.ws), b.ws.port());
        o.set_transport(rumqttc::Transport::Ws);
    })
    .await;
    sub.client.subscribe("ws/t", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let tcp = clients::v4(b.tcp, "tcp-pub", true).await;
    tcp.client.publish("ws/t", rumqttc::QoS::AtLeastOnce, false, "over tcp").await.unwrap();
    let m = next(&mut sub.rx).await.expect("message over WebSocket");
    assert_eq!(&m.payload[..], b"over tcp");
}

#[test]
fn websocket_upgrade_only_on_the_mqtt_path_and_echoes_the_subprotocol() {
    let b = BrokerProc::start("");
    let request = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(b.ws).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let ok = request("/mqtt");
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    assert!(ok.to_ascii_lowercase().contains("sec-websocket-protocol: mqtt"), "{ok}");
    let wrong = request("/other");
    assert!(wrong.starts_with("HTTP/1.1 404"), "{wrong}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate (CN=device-1, O=acme), as PEM files.
pub fn make_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "starling test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.distinguished_name.push(DnType::CommonName, "device-1");
    client_params.distinguished_name.push(DnType::OrganizationName, "acme");
    let client = client_params.signed_by(&client_key, &issuer).unwrap();

    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("client.crt"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
}

pub fn tls_broker(require_client_cert: bool, extra: &str) -> (BrokerProc, tempfile::TempDir) {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let d = pki.path().display();
    let port = free_port();
    let b = BrokerProc::start(&format!(
        "{extra}\n[listeners.tls]\nenabled = true\nbind = \"127.0.0.1:{port}\"\ncert_file = \"{d}/server.crt\"\n\
         key_file = \"{d}/server.key\"\nca_file = \"{d}/ca.crt\"\nrequire_client_cert = {require_client_cert}\n"
    ));
    (b, pki)
}

fn mosquitto_pub_tls(b: &BrokerProc, pki: &Path, with_cert: bool, topic: &str) -> std::process::Output {
    let tls = b.tls.unwrap();
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &tls.port().to_string(), "-t", topic, "-m", "secure", "-q", "1"])
        .arg("--cafile")
        .arg(pki.join("ca.crt"));
    if with_cert {
        cmd.arg("--cert").arg(pki.join("client.crt")).arg("--key").arg(pki.join("client.key"));
    }
    cmd.output().expect("mosquitto_pub")
}

#[tokio::test]
async fn tls_listener_serves_mqtt_to_clients_that_verify_the_server() {
    let (b, pki) = tls_broker(false, "");
    let mut sub = clients::v4(b.tcp, "plain-sub", true).await;
    sub.client.subscribe("tls/t", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let out = mosquitto_pub_tls(&b, pki.path(), false, "tls/t");
    assert!(out.status.success(), "mosquitto_pub over TLS failed: {}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut sub.rx).await.expect("message published over TLS");
    assert_eq!(&m.payload[..], b"secure");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_and_accepts_those_with_one() {
    let (b, pki) = tls_broker(true, "");
    let mut sub = clients::v4(b.tcp, "plain-sub", true).await;
    sub.client.subscribe("mtls/t", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let refused = mosquitto_pub_tls(&b, pki.path(), false, "mtls/t");
    assert!(!refused.status.success(), "a client without certificate must be refused");
    let ok = mosquitto_pub_tls(&b, pki.path(), true, "mtls/t");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(&next(&mut sub.rx).await.expect("message").payload[..], b"secure");
}

#[tokio::test]
async fn client_certificate_organization_selects_the_tenant() {
    let (b, pki) = tls_broker(true, "[tenancy]\nrule = \"cert_organization\"\n");
    // A subscriber in the default tenant sees nothing from tenant "acme".
    let mut global = clients::v4(b.tcp, "global-sub", true).await;
    global.client.subscribe("t/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    assert!(mosquitto_pub_tls(&b, pki.path(), true, "t/x").status.success());
    clients::nothing_for(&mut global.rx, std::time::Duration::from_millis(500)).await;
    let log = b.log();
    assert!(
        log.contains("tenant=\"acme\"") || log.contains("tenant=acme"),
        "tenant from certificate not seen in log: {log}"
    );
}

/// rumqttc over TLS, verifying the server against the test CA and presenting the client certificate.
fn tls_with_client_cert(pki: &Path) -> rumqttc::Transport {
    use std::io::BufReader;
    let read = |name: &str| std::fs::read(pki.join(name)).expect("PEM file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(&read("ca.crt")[..])) {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let chain: Vec<_> =
        rustls_pemfile::certs(&mut BufReader::new(&read("client.crt")[..])).map(|c| c.expect("client cert")).collect();
    let key = rustls_pemfile::private_key(&mut BufReader::new(&read("client.key")[..]))
        .expect("client key")
        .expect("a private key");
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client auth");
    rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)))
}

#[tokio::test]
async fn client_certificate_tenant_gets_only_the_messages_of_that_tenant() {
    // A plain-TCP user whose credentials entry pins tenant "acme": the tenant the certificate's
    // Organization (O=acme) must map to.
    let users = tempfile::tempdir().unwrap();
    let users_file = users.path().join("users.toml");
    std::fs::write(&users_file, "[[users]]\nusername = \"acme-tcp\"\npassword = \"pw\"\ntenant = \"acme\"\n").unwrap();
    let (b, pki) = tls_broker(
        true,
        &format!(
            "[auth]\nallow_anonymous = true\nallow_plaintext_passwords = true\ncredentials_file = \"{}\"\n\
             [tenancy]\nrule = \"cert_organization\"\n",
            users_file.display()
        ),
    );
    let tls = b.tls.expect("TLS listener");
    let over_tls = |id: &'static str| {
        let transport = tls_with_client_cert(pki.path());
        move |o: &mut v5c::MqttOptions| {
            *o = v5c::MqttOptions::new(id, "127.0.0.1", tls.port());
            o.set_transport(transport);
        }
    };
    let mut cert_sub = clients::v5(tls, "cert-sub", over_tls("cert-sub")).await;
    let mut acme_tcp = clients::v5(b.tcp, "acme-tcp", |o| {
        o.set_credentials("acme-tcp", "pw");
    })
    .await;
    let mut global = clients::v4(b.tcp, "global-sub", true).await;
    cert_sub.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    acme_tcp.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    global.client.subscribe("t/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;

    // Published in the default tenant: only the global subscriber gets it.
    let global_pub = clients::v4(b.tcp, "global-pub", true).await;
    global_pub.client.publish("t/global", rumqttc::QoS::AtLeastOnce, false, "global").await.unwrap();
    assert_eq!(&next(&mut global.rx).await.expect("same tenant").payload[..], b"global");
    // Published with the certificate: tenant acme, so the certificate subscriber and acme's TCP
    // user get it, the global subscriber does not.
    let cert_pub = clients::v5(tls, "cert-pub", over_tls("cert-pub")).await;
    cert_pub.client.publish("t/acme", v5c::QoS::AtLeastOnce, false, "from cert").await.unwrap();
    assert_eq!(&next(&mut cert_sub.rx).await.expect("certificate tenant").payload[..], b"from cert");
    assert_eq!(&next(&mut acme_tcp.rx).await.expect("tenant acme").payload[..], b"from cert");
    // And acme's TCP user reaches the certificate subscriber.
    acme_tcp.client.publish("t/tcp", v5c::QoS::AtLeastOnce, false, "from tcp").await.unwrap();
    assert_eq!(&next(&mut cert_sub.rx).await.expect("tenant acme").payload[..], b"from tcp");
    // Nothing crossed the tenant boundary either way (acme_tcp gets its own message back).
    assert_eq!(&next(&mut acme_tcp.rx).await.expect("own message").payload[..], b"from tcp");
    clients::nothing_for(&mut cert_sub.rx, std::time::Duration::from_millis(500)).await;
    clients::nothing_for(&mut acme_tcp.rx, std::time::Duration::from_millis(300)).await;
    clients::nothing_for(&mut global.rx, std::time::Duration::from_millis(300)).await;
}
