//! Relaying queries outside the cluster domain to the node's upstream resolvers (from the
//! node's `/etc/resolv.conf`, or a setting), over the transport the client used: UDP as a
//! datagram from a fresh socket per query, TCP as one length-prefixed exchange per query.
//! Each upstream gets a bounded time; the next one is tried when it does not answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest DNS message over TCP.
const MAX_MESSAGE: usize = 65_535;

/// The client's transport, which the upstream exchange follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream} over {transport:?}: {source}")]
    Io {
        upstream: SocketAddr,
        transport: Transport,
        source: std::io::Error,
    },
    #[error("upstream {upstream} over {transport:?} did not answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout {
        upstream: SocketAddr,
        transport: Transport,
    },
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses, without `skip` (the
/// cluster DNS address itself: forwarding there would loop).
pub fn upstreams_from_resolv_conf(text: &str, skip: &[IpAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(words.next()?)
        })
        .filter_map(|addr| addr.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !skip.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

fn unspecified(upstream: &SocketAddr) -> SocketAddr {
    match upstream {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Sends `query` (a whole DNS message) to the upstreams in turn; the first answer whose id
/// matches is returned as it came.
pub async fn forward(
    upstreams: &[SocketAddr],
    query: &[u8],
    transport: Transport,
) -> Result<Vec<u8>, ForwardError> {
    let mut last = ForwardError::NoUpstream;
    for upstream in upstreams {
        let attempt = match transport {
            Transport::Udp => tokio::time::timeout(UPSTREAM_TIMEOUT, udp(*upstream, query)).await,
            Transport::Tcp => tokio::time::timeout(UPSTREAM_TIMEOUT, tcp(*upstream, query)).await,
        };
        match attempt {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(source)) => {
                last = ForwardError::Io {
                    upstream: *upstream,
                    transport,
                    source,
                }
            }
            Err(_) => {
                last = ForwardError::Timeout {
                    upstream: *upstream,
                    transport,
                }
            }
        }
        tracing::debug!(error = %last, "upstream resolver failed; trying the next");
    }
    Err(last)
}

async fn udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(unspecified(&upstream)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A datagram that is not the answer to this query (wrong id) is ignored.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    read_frame(&mut stream).await
}

/// One length-prefixed DNS message from a TCP stream.
pub async fn read_frame<R: AsyncReadExt + Unpin>(stream: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Writes one length-prefixed DNS message.
pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    stream: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_become_upstreams_without_the_cluster_dns() {
        let text = "# generated\nsearch example.com\nnameserver 10.96.0.10\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\noptions ndots:2\nnameserver\n";
        let skip = ["10.96.0.10".parse().unwrap()];
        let got = upstreams_from_resolv_conf(text, &skip);
        assert_eq!(
            got,
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
