//! A minimal DNS client (one A query over UDP) for asking the cluster's DNS Service for pod and
//! Service names from the host, so the tests need no `dig` and run the same against kind.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// The answer to an A query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The A records (may be empty: NOERROR without A records).
    Found(Vec<Ipv4Addr>),
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
}

/// Asks `server` (e.g. the kube-dns ClusterIP on port 53) for the A records of `name`.
pub fn query_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer> {
    crate::fence::check(&server.to_string())?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let id = ((nanos ^ std::process::id()) & 0xffff) as u16;
    let query = encode_query(id, name)?;
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(server).with_context(|| format!("DNS server {server}"))?;
    socket.send(&query).with_context(|| format!("sending a DNS query to {server}"))?;
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + timeout;
    loop {
        let n = socket.recv(&mut buf).with_context(|| format!("no DNS answer from {server} for {name}"))?;
        if let Some(answer) = decode_answer(id, &buf[..n])? {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            bail!("no DNS answer from {server} for {name} within {timeout:?}");
        }
    }
}

fn encode_query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // standard query, recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("bad DNS name {name:?}");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // type A, class IN
    Ok(q)
}

/// Parses a response; `None` when it is not the answer to query `id`.
fn decode_answer(id: u16, msg: &[u8]) -> Result<Option<Answer>> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Ok(None);
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Ok(Some(Answer::NoSuchName)),
        rcode => bail!("DNS error rcode {rcode}"),
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let header = msg.get(pos..pos + 10).context("truncated DNS answer")?;
        let rtype = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[8], header[9]]));
        let data = msg.get(pos + 10..pos + 10 + len).context("truncated DNS record")?;
        if rtype == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += 10 + len;
    }
    Ok(Some(Answer::Found(ips)))
}

/// Returns the offset after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize> {
    loop {
        let len = *msg.get(pos).context("truncated DNS name")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => return Ok(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_query_for_a_name() {
        let q = encode_query(0x1234, "a.bc.").unwrap();
        assert_eq!(q, [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
    }

    #[test]
    fn decodes_a_records_with_compressed_names() {
        let mut msg = encode_query(7, "x.y").unwrap();
        msg[2] |= 0x80; // response
        msg[7] = 2; // two answers
        for ip in [[10, 244, 0, 5], [10, 244, 0, 6]] {
            msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            msg.extend_from_slice(&ip);
        }
        let got = decode_answer(7, &msg).unwrap();
        assert_eq!(got, Some(Answer::Found(vec![Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(10, 244, 0, 6)])));
        assert_eq!(decode_answer(8, &msg).unwrap(), None, "another query's answer is ignored");
    }

    #[test]
    fn nxdomain_is_no_such_name() {
        let mut msg = encode_query(9, "gone.example").unwrap();
        msg[2] |= 0x80;
        msg[3] = 3;
        assert_eq!(decode_answer(9, &msg).unwrap(), Some(Answer::NoSuchName));
    }
}
