//! `meshctl echo`, the lab's echo app: on each given port it answers HTTP/1.1 and h2c with a
//! JSON description of the request, and echoes raw TCP back. The contract the lab's tests
//! rely on is in DESIGN.md ("The lab's echo app"); [`route`] holds the pure request → reply
//! logic, [`server`] the sockets.

mod hooks;
pub mod route;
mod server;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub use route::Identity;

/// `meshctl echo` arguments.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Pod name reported in every answer and log line.
    #[arg(long)]
    pub pod: String,
    /// Pod namespace reported in every answer and log line.
    #[arg(long)]
    pub namespace: String,
    /// TCP port to serve (repeatable); 0 picks a free one, shown in the ready line.
    #[arg(long = "port", value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    /// Address to listen on (repeatable). IPv6 addresses are bound IPv6-only, so `0.0.0.0`
    /// and `::` can both be given.
    #[arg(long = "listen", value_name = "IP", default_value = "0.0.0.0")]
    pub listen: Vec<IpAddr>,
}

/// Why the echo app could not start.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    /// A listening socket could not be made.
    #[error("cannot listen on {addr}: {step}: {source}")]
    Bind {
        /// Address and port requested.
        addr: SocketAddr,
        /// Which step failed (socket, bind, listen, ...).
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// stdout could not be duplicated for the request log.
    #[error("cannot duplicate stdout for the request log: {0}")]
    Stdout(#[source] io::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Signal name.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Exit code when the echo app cannot start (bind failure, runtime).
pub const EXIT_FAILED: u8 = 1;

/// Runs the echo app until SIGTERM or SIGINT (exit 0); 1 when it cannot start. Prints one
/// `echo listening on ADDR` line per socket to `err` once all of them accept connections.
pub fn run(args: EchoArgs, err: &mut dyn Write) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(err, &EchoError::Runtime(e)),
    };
    let code = rt.block_on(async {
        match serve(args, err).await {
            Ok(()) => 0,
            Err(e) => fail(err, &e),
        }
    });
    // Connections still open at exit are simply dropped; nothing is left to flush.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

fn fail(err: &mut dyn Write, e: &EchoError) -> u8 {
    let _ = writeln!(err, "meshctl echo: {e}");
    EXIT_FAILED
}

async fn serve(args: EchoArgs, err: &mut dyn Write) -> Result<(), EchoError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first, so a SIGTERM sent right after the ready line is not fatal-by-default.
    let mut term =
        signal(SignalKind::terminate()).map_err(|source| EchoError::Signal { signal: "SIGTERM", source })?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|source| EchoError::Signal { signal: "SIGINT", source })?;

    let mut listeners = Vec::new();
    for ip in &args.listen {
        for &port in &args.ports {
            listeners.push(bind(SocketAddr::new(*ip, port))?);
        }
    }
    let id = Arc::new(Identity { pod: args.pod, namespace: args.namespace });
    let fail_counts = Arc::new(hooks::FailCounts::default());
    let log = Arc::new(server::Log::stdout().map_err(EchoError::Stdout)?);
    for l in listeners {
        let addr = l.local_addr().map_err(|source| EchoError::Bind {
            addr: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            step: "getsockname",
            source,
        })?;
        tokio::spawn(server::accept_loop(l, id.clone(), log.clone(), fail_counts.clone()));
        let _ = writeln!(err, "echo listening on {addr}");
    }
    let _ = err.flush();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A listening socket on `addr`: SO_REUSEADDR (quick restarts), IPv6-only for IPv6 addresses.
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, EchoError> {
    let e = |step| move |source| EchoError::Bind { addr, step, source };
    let sock =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(e("socket"))?;
    sock.set_reuse_address(true).map_err(e("SO_REUSEADDR"))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(e("IPV6_V6ONLY"))?;
    }
    sock.set_nonblocking(true).map_err(e("O_NONBLOCK"))?;
    sock.bind(&addr.into()).map_err(e("bind"))?;
    sock.listen(1024).map_err(e("listen"))?;
    tokio::net::TcpListener::from_std(sock.into()).map_err(e("register with the runtime"))
}
