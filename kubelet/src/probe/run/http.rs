//! `httpGet` probes: one HTTP/1.1 GET over a fresh connection (`Connection: close`), written
//! and parsed by hand. Status 200–399 is a success. Redirects are not followed: a 3xx counts as
//! success (the kubelet follows same-host redirects and also counts other ones as success).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Target, host_port, io_error, tls};
use crate::probe::config::{HttpGet, Scheme};
use crate::probe::state::ProbeResult;

/// At most this much of the body is read.
const MAX_BODY: usize = 10 * 1024;
/// A status line and headers longer than this are refused.
const MAX_HEAD: usize = 16 * 1024;
/// What the kubelet of the Kubernetes version skiff speaks sends.
const USER_AGENT: &str = "kube-probe/1.33";

/// A resolved `httpGet`: where to connect and the request's bytes.
#[derive(Clone, Debug)]
pub(super) struct Request {
    url: String,
    scheme: Scheme,
    host: String,
    port: u16,
    bytes: Vec<u8>,
}

impl Request {
    /// Resolves `get`'s host and port against the container; `Err`: a named port it lacks.
    pub(super) fn new(get: &HttpGet, target: &Target) -> Result<Request, String> {
        let host = target.host(get.host.as_deref());
        let port = target.port(&get.port)?;
        let authority = host_port(&host, port);
        let scheme = match get.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let url = format!("{scheme}://{authority}{}", get.path);
        let has = |name: &str| {
            get.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut head = format!("GET {} HTTP/1.1\r\n", get.path);
        if !has("host") {
            head.push_str(&format!("Host: {authority}\r\n"));
        }
        if !has("user-agent") {
            head.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
        }
        if !has("accept") {
            head.push_str("Accept: */*\r\n");
        }
        for (name, value) in &get.headers {
            if !name.eq_ignore_ascii_case("connection") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        Ok(Request {
            url,
            scheme: get.scheme,
            host,
            port,
            bytes: head.into_bytes(),
        })
    }

    /// `Get "http://10.0.0.5:8080/healthz"`, the start of the kubelet's messages.
    pub(super) fn describe(&self) -> String {
        format!("Get \"{}\"", self.url)
    }
}

/// Sends the request and judges the status.
pub(super) async fn get(req: &Request) -> ProbeResult {
    let addr = host_port(&req.host, req.port);
    let tcp = match TcpStream::connect(&addr).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let why = io_error("connect", &e);
            return ProbeResult::Failure(format!("{}: dial tcp {addr}: {why}", req.describe()));
        }
    };
    let status = match req.scheme {
        Scheme::Http => exchange(tcp, &req.bytes).await,
        Scheme::Https => match tls::connect(&req.host, tcp).await {
            Ok(stream) => exchange(stream, &req.bytes).await,
            Err(e) => Err(e),
        },
    };
    match status {
        Ok(code) if (200..400).contains(&code) => ProbeResult::Success,
        Ok(code) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e) => ProbeResult::Failure(format!("{}: {e}", req.describe())),
    }
}

/// Writes the request, reads the response head and at most [`MAX_BODY`] of its body, and
/// returns the status code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
) -> Result<u16, String> {
    s.write_all(request)
        .await
        .map_err(|e| io_error("write", &e))?;
    s.flush().await.map_err(|e| io_error("write", &e))?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        if read_some(&mut s, &mut buf).await? == 0 {
            return Err("EOF".into());
        }
    };
    let head = parse_head(&buf[..head_end])?;
    let mut body = buf.split_off(head_end);
    let want = head.content_length.unwrap_or(MAX_BODY).min(MAX_BODY);
    while body.len() < want && !(head.chunked && body.ends_with(b"0\r\n\r\n")) {
        if read_some(&mut s, &mut body).await? == 0 {
            break;
        }
    }
    Ok(head.status)
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await.map_err(|e| io_error("read", &e))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the probe needs of a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

/// Parses `HTTP/1.x NNN reason\r\n` and the headers that say how long the body is.
fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let malformed = || {
        let shown: String = status_line.chars().take(64).collect();
        format!("malformed HTTP response {shown:?}")
    };
    let (version, rest) = status_line.split_once(' ').ok_or_else(malformed)?;
    if !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let code = rest
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
    let status = code
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(malformed)?;
    let (mut content_length, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::PortRef;

    #[test]
    fn parses_status_and_body_length() {
        let h = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(
            h,
            Ok(Head {
                status: 503,
                content_length: Some(12),
                chunked: false
            })
        );
        let h = parse_head(b"HTTP/1.0 200\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert_eq!((h.status, h.chunked), (200, true));
    }

    #[test]
    fn refuses_malformed_status_lines() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 999 Nope\r\n\r\n",
            b"\r\n\r\n",
        ] {
            let err = parse_head(bad).unwrap_err();
            assert!(err.starts_with("malformed HTTP response"), "{err}");
        }
    }

    #[test]
    fn request_has_defaults_and_user_headers() {
        let target = Target {
            pod_ip: "10.0.0.5".parse().unwrap(),
            ports: vec![],
            container_id: "c1".into(),
        };
        let get = HttpGet {
            host: None,
            port: PortRef::Number(8080),
            path: "/healthz?x=1".into(),
            scheme: Scheme::Http,
            headers: vec![
                ("Host".into(), "app.example".into()),
                ("X-Probe".into(), "1".into()),
            ],
        };
        let req = Request::new(&get, &target).unwrap();
        assert_eq!(req.describe(), "Get \"http://10.0.0.5:8080/healthz?x=1\"");
        assert_eq!(
            String::from_utf8(req.bytes).unwrap(),
            "GET /healthz?x=1 HTTP/1.1\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n\
             Host: app.example\r\nX-Probe: 1\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let target = Target {
            pod_ip: "fd00::5".parse().unwrap(),
            ports: vec![],
            container_id: "c1".into(),
        };
        let get = HttpGet {
            host: None,
            port: PortRef::Number(80),
            path: "/".into(),
            scheme: Scheme::Https,
            headers: vec![],
        };
        let req = Request::new(&get, &target).unwrap();
        assert_eq!(req.describe(), "Get \"https://[fd00::5]:80/\"");
    }
}
