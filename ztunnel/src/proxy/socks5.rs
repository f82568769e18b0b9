//! SOCKS5 (RFC 1928) for running without capture: no authentication, CONNECT only, IPv4,
//! IPv6 and domain targets. The wire parsing is pure functions over byte slices (unit tested,
//! fuzzable); [`handshake`] drives them over a socket and [`reply`] answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// Where the client asked to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Domain(String, u16),
}

/// RFC 1928 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// Why a SOCKS5 exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    #[error("not SOCKS version 5 (first byte {0:#04x})")]
    Version(u8),
    #[error("client offers no acceptable authentication method (only no-auth is supported)")]
    NoAcceptableMethod,
    #[error("command {0} not supported (only CONNECT)")]
    Command(u8),
    #[error("address type {0} not supported")]
    AddressType(u8),
    #[error("domain name is not valid UTF-8 or is empty")]
    Domain,
    #[error("reserved byte is {0:#04x}, expected 0")]
    Reserved(u8),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl Socks5Error {
    /// The reply to send for this error, when the request phase was reached.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Socks5Error::Command(_) => ReplyCode::CommandNotSupported,
            Socks5Error::AddressType(_) => ReplyCode::AddressTypeNotSupported,
            _ => ReplyCode::GeneralFailure,
        }
    }
}

/// Parses the method-selection message. `Ok(None)`: more bytes needed; `Ok(Some(n))`: `n`
/// bytes consumed and no-auth offered.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<usize>, Socks5Error> {
    let Some(&ver) = buf.first() else { return Ok(None) };
    if ver != VERSION {
        return Err(Socks5Error::Version(ver));
    }
    let Some(&n) = buf.get(1) else { return Ok(None) };
    let end = 2 + n as usize;
    let Some(methods) = buf.get(2..end) else { return Ok(None) };
    if !methods.contains(&NO_AUTH) {
        return Err(Socks5Error::NoAcceptableMethod);
    }
    Ok(Some(end))
}

/// Parses a request. `Ok(None)`: more bytes needed; `Ok(Some((n, target)))`: `n` bytes consumed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(usize, Target)>, Socks5Error> {
    if buf.len() < 4 {
        if let Some(&v) = buf.first()
            && v != VERSION
        {
            return Err(Socks5Error::Version(v));
        }
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Socks5Error::Version(buf[0]));
    }
    if buf[2] != 0 {
        return Err(Socks5Error::Reserved(buf[2]));
    }
    let (addr_len, start) = match buf[3] {
        ATYP_V4 => (4, 4),
        ATYP_V6 => (16, 4),
        ATYP_DOMAIN => match buf.get(4) {
            Some(&n) => (n as usize, 5),
            None => return Ok(None),
        },
        other => return Err(Socks5Error::AddressType(other)),
    };
    let end = start + addr_len + 2;
    let Some(rest) = buf.get(start..end) else { return Ok(None) };
    // The command is checked after the length so a bad command still gets its reply at the
    // right point in the stream.
    if buf[1] != CMD_CONNECT {
        return Err(Socks5Error::Command(buf[1]));
    }
    let (addr, port) = rest.split_at(addr_len);
    let port = u16::from_be_bytes([port[0], port[1]]);
    let target = match buf[3] {
        ATYP_V4 => {
            let a: [u8; 4] = addr.try_into().map_err(|_| Socks5Error::AddressType(ATYP_V4))?;
            Target::Addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        ATYP_V6 => {
            let a: [u8; 16] = addr.try_into().map_err(|_| Socks5Error::AddressType(ATYP_V6))?;
            Target::Addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => {
            let name = std::str::from_utf8(addr).map_err(|_| Socks5Error::Domain)?;
            if name.is_empty() {
                return Err(Socks5Error::Domain);
            }
            // A literal IP written as a domain is an address.
            match name.parse::<IpAddr>() {
                Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
                Err(_) => Target::Domain(name.to_string(), port),
            }
        }
    };
    Ok(Some((end, target)))
}

/// Encodes a reply with the given bound address.
pub fn encode_reply(code: ReplyCode, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, code as u8, 0];
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

/// Reads until `parse` returns a value (up to 512 bytes, more than any valid message).
async fn read_msg<S, T>(
    s: &mut S,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, Socks5Error>,
) -> Result<T, Socks5Error>
where
    S: tokio::io::AsyncRead + Unpin,
{
    loop {
        if let Some(v) = parse(buf)? {
            return Ok(v);
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs the greeting and reads the CONNECT request. On a protocol error the right reply (or
/// method rejection) has been sent before the error is returned.
pub async fn handshake<S>(s: &mut S) -> Result<Target, Socks5Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(64);
    let used = match read_msg(s, &mut buf, parse_greeting).await {
        Ok(n) => n,
        Err(e @ Socks5Error::NoAcceptableMethod) => {
            s.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    buf.drain(..used);
    s.write_all(&[VERSION, NO_AUTH]).await?;
    match read_msg(s, &mut buf, parse_request).await {
        Ok((_, target)) => Ok(target),
        Err(e @ (Socks5Error::Command(_) | Socks5Error::AddressType(_))) => {
            reply(s, e.reply_code()).await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Sends a reply (the bound address is not meaningful here: 0.0.0.0:0).
pub async fn reply<S>(s: &mut S, code: ReplyCode) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let bound = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    s.write_all(&encode_reply(code, bound)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting() {
        assert_eq!(parse_greeting(&[]).unwrap(), None);
        assert_eq!(parse_greeting(&[5]).unwrap(), None);
        assert_eq!(parse_greeting(&[5, 2, 2]).unwrap(), None);
        assert_eq!(parse_greeting(&[5, 2, 2, 0]).unwrap(), Some(4));
        assert!(matches!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::Version(4))));
        assert!(matches!(parse_greeting(&[5, 1, 2]), Err(Socks5Error::NoAcceptableMethod)));
    }

    #[test]
    fn requests() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90];
        for cut in 0..v4.len() {
            assert_eq!(parse_request(&v4[..cut]).unwrap(), None, "prefix {cut}");
        }
        assert_eq!(parse_request(&v4).unwrap(), Some((10, Target::Addr("10.0.0.1:8080".parse().unwrap()))));

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(parse_request(&v6).unwrap(), Some((22, Target::Addr("[fd00::1]:80".parse().unwrap()))));

        let mut dom = vec![5, 1, 0, 3, 7];
        dom.extend_from_slice(b"reviews");
        dom.extend_from_slice(&[0x23, 0x82]);
        assert_eq!(parse_request(&dom).unwrap(), Some((14, Target::Domain("reviews".into(), 9090))));

        let mut lit = vec![5, 1, 0, 3, 8];
        lit.extend_from_slice(b"10.1.2.3");
        lit.extend_from_slice(&[0, 80]);
        assert_eq!(parse_request(&lit).unwrap().unwrap().1, Target::Addr("10.1.2.3:80".parse().unwrap()));

        let bind = [5, 2, 0, 1, 10, 0, 0, 1, 0, 80];
        let e = parse_request(&bind).unwrap_err();
        assert_eq!(e.reply_code(), ReplyCode::CommandNotSupported);
        let e = parse_request(&[5, 1, 0, 9, 0, 0]).unwrap_err();
        assert_eq!(e.reply_code(), ReplyCode::AddressTypeNotSupported);
        assert!(matches!(parse_request(&[5, 1, 0, 3, 0, 0, 80]), Err(Socks5Error::Domain)));
        assert!(matches!(parse_request(&[5, 1, 1, 1, 0, 0, 0, 0, 0, 80]), Err(Socks5Error::Reserved(1))));
        assert!(matches!(parse_request(&[4, 1]), Err(Socks5Error::Version(4))));
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(ReplyCode::Succeeded, "1.2.3.4:80".parse().unwrap()),
            vec![5, 0, 0, 1, 1, 2, 3, 4, 0, 80]
        );
        assert_eq!(encode_reply(ReplyCode::NotAllowed, "[::1]:1".parse().unwrap()).len(), 22);
    }

    #[tokio::test]
    async fn handshake_over_a_pipe() {
        let (mut client, mut server) = tokio::io::duplex(256);
        let srv = tokio::spawn(async move { handshake(&mut server).await.map(|t| (t, server)) });
        client.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 7]).await.unwrap();
        let mut m = [0u8; 2];
        client.read_exact(&mut m).await.unwrap();
        assert_eq!(m, [5, 0]);
        let (t, _server) = srv.await.unwrap().unwrap();
        assert_eq!(t, Target::Addr("127.0.0.1:7".parse().unwrap()));

        let (mut client, mut server) = tokio::io::duplex(256);
        let srv = tokio::spawn(async move { handshake(&mut server).await });
        client.write_all(&[5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 7]).await.unwrap();
        let mut r = [0u8; 12];
        client.read_exact(&mut r).await.unwrap();
        assert_eq!(&r[..4], &[5, 0, 5, ReplyCode::CommandNotSupported as u8]);
        assert!(matches!(srv.await.unwrap(), Err(Socks5Error::Command(3))));
    }
}
