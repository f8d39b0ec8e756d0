//! Real relay processes on loopback and a minimal signed HTTP/1.1 client for them.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_protocol::{Csprng, DeviceKeys, RequestAuth, Timestamp};

/// A `switchboard relay` child process.
pub struct RelayProcess {
    pub child: Child,
    pub addr: String,
}

impl RelayProcess {
    pub fn start(db: &str) -> Self {
        Self::start_with(db, &[])
    }

    /// Starts a relay with more command-line arguments.
    pub fn start_with(db: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "relay",
                "--db",
                db,
                "--listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// One HTTP/1.1 request (`Connection: close`), signed by `keys` when given. Returns the status
/// and the body, or `None` if the connection failed (relay gone).
pub fn request(
    addr: &str,
    keys: Option<&DeviceKeys>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let headers = match keys {
        Some(keys) => signed_headers(keys, method, path, body),
        None => Vec::new(),
    };
    request_with(addr, &headers, method, path, body)
}

/// The authentication headers of a request signed by `keys` now (to send, or send again).
pub fn signed_headers(
    keys: &DeviceKeys,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut rng = Csprng::from_os().unwrap();
    RequestAuth::sign(keys, method, path, body, now(), &mut rng)
        .header_values()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// One HTTP/1.1 request (`Connection: close`) with the given extra headers (e.g. those of
/// [`signed_headers`]). Returns the status and the body, or `None` if the connection failed.
pub fn request_with(
    addr: &str,
    headers: &[(String, String)],
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head_text = String::from_utf8_lossy(&response[..split]).to_string();
    let status: u16 = head_text.lines().next()?.split(' ').nth(1)?.parse().ok()?;
    let mut body = response[split + 4..].to_vec();
    if head_text
        .to_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < end + 2 + size + 2 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}
