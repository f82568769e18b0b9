//! Saturation: closed-loop, as many requests per second as a path answers, with `h2load`
//! (nghttp2-client) run inside the scenario's client pod. HTTP/1.1 with 16 connections
//! (one request in flight on each), h2c with 4 connections of 16 streams; a warm-up, then the
//! measured window. Only 2xx responses count as served; every other outcome is counted and
//! reported, never dropped.
//!
//! The Host (`:authority`) goes in the URI and the address in `--connect-to`: a `-H Host:`
//! would be sent by h2load's HTTP/1.1 client next to the URI's own Host header, a duplicate
//! that nginx answers 400 and our waypoint's plaintext listener routes by the wrong one. And
//! h2load 1.52 in duration mode can spin forever once a server starts closing its connections,
//! so each run is bounded with coreutils' `timeout` and a run that is cut short is reported as
//! such.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_e2e::lab::Lab;

use crate::lab::Scenario;
use crate::load::Proto;

/// Connections (and streams per connection) of a saturation run, per protocol.
pub fn concurrency(proto: Proto) -> (usize, usize) {
    match proto {
        Proto::H1 => (16, 1),
        Proto::H2 => (4, 16),
    }
}

/// h2load, or why it cannot be used.
pub fn binary() -> anyhow::Result<PathBuf> {
    crate::run::which("h2load")
        .context("h2load is not installed: the saturation runs need it (`apt-get install nghttp2-client`)")
}

/// One saturation run's command line (h2load's arguments after the program): requests for
/// `http://{host}{path}` (so Host or `:authority` is `host`) sent to `target` (`ip:port`).
pub fn args(
    proto: Proto,
    target: &str,
    host: &str,
    path: &str,
    body_file: &Path,
    duration: Duration,
    warmup: Duration,
) -> Vec<String> {
    let (conns, streams) = concurrency(proto);
    let mut a: Vec<String> = Vec::new();
    if proto == Proto::H1 {
        a.push("--h1".into());
    }
    a.extend([
        "-c".into(),
        conns.to_string(),
        "-m".into(),
        streams.to_string(),
        "-t".into(),
        "1".into(),
        "-D".into(),
        secs(duration),
        "--warm-up-time".into(),
        secs(warmup),
        "-d".into(),
        body_file.display().to_string(),
        format!("--connect-to={target}"),
        format!("http://{host}{path}"),
    ]);
    a
}

/// Whole seconds, at least 1 (h2load's durations are whole).
fn secs(d: Duration) -> String {
    format!("{}", d.as_secs().max(1))
}

/// What h2load reports for its measured window (the warm-up is not in it).
#[derive(Debug, Clone, PartialEq)]
pub struct H2load {
    /// Finished requests per second (2xx or not).
    pub rps: f64,
    pub total: u64,
    pub done: u64,
    /// Answered 2xx.
    pub succeeded: u64,
    /// Not answered 2xx: errored, timed out, or another status.
    pub failed: u64,
    /// Connection or protocol errors.
    pub errored: u64,
    pub timeout: u64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
}

impl H2load {
    /// 2xx responses per second of the measured window.
    pub fn ok_rps(&self) -> f64 {
        if self.done == 0 { 0.0 } else { self.rps * self.succeeded as f64 / self.done as f64 }
    }

    /// Requests of the measured window not answered 2xx.
    pub fn not_ok(&self) -> u64 {
        self.failed.max(self.done.saturating_sub(self.succeeded))
    }

    /// Why the run's figure cannot be taken at face value, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.done == 0 {
            return Some(
                "h2load finished no request (connections refused or reset: h2load says no more)".into(),
            );
        }
        if self.not_ok() == 0 {
            return None;
        }
        let [_, s3, s4, s5] = self.status;
        Some(format!(
            "{} of {} requests failed ({} errored, {} timed out, status 3xx {s3}, 4xx {s4}, 5xx {s5})",
            self.not_ok(),
            self.done,
            self.errored,
            self.timeout
        ))
    }
}

/// Parses h2load's text report (`finished in ...`, `requests: ...`, `status codes: ...`).
pub fn parse(out: &str) -> Result<H2load, String> {
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .ok_or_else(|| format!("no {prefix:?} line in h2load's output"))
    };
    let finished = line("finished in ")?;
    let rps = finished
        .split(", ")
        .find_map(|p| p.strip_suffix(" req/s"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no req/s in {finished:?}"))?;
    // `requests: 72549 total, 72549 started, 72549 done, 72549 succeeded, 0 failed, ...`
    let counts = |l: &str, prefix: &str| -> Result<Vec<(String, u64)>, String> {
        l[prefix.len()..]
            .split(',')
            .map(|item| {
                let mut w = item.split_whitespace();
                match (w.next().map(str::parse::<u64>), w.next()) {
                    (Some(Ok(n)), Some(name)) => Ok((name.to_string(), n)),
                    _ => Err(format!("cannot read {item:?} in {l:?}")),
                }
            })
            .collect()
    };
    let requests = counts(line("requests: ")?, "requests: ")?;
    let status = counts(line("status codes: ")?, "status codes: ")?;
    let get = |list: &[(String, u64)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("h2load's output has no {name:?} count"))
    };
    Ok(H2load {
        rps,
        total: get(&requests, "total")?,
        done: get(&requests, "done")?,
        succeeded: get(&requests, "succeeded")?,
        failed: get(&requests, "failed")?,
        errored: get(&requests, "errored")?,
        timeout: get(&requests, "timeout")?,
        status: [get(&status, "2xx")?, get(&status, "3xx")?, get(&status, "4xx")?, get(&status, "5xx")?],
    })
}

/// Runs h2load in the scenario's client pod.
pub fn run(
    lab: &Lab,
    s: &Scenario,
    proto: Proto,
    path: &str,
    body_file: &Path,
    duration: Duration,
    warmup: Duration,
) -> anyhow::Result<H2load> {
    let bin = binary()?;
    let target = if proto == Proto::H1 { &s.h1_target } else { &s.h2_target };
    let a = args(proto, target, s.host, path, body_file, duration, warmup);
    // The run's own length and then some: start-up, connections, the last responses.
    let limit = (duration.as_secs().max(1) + warmup.as_secs().max(1) + HUNG_AFTER.as_secs()).to_string();
    let mut argv: Vec<&str> = vec!["timeout", "-s", "KILL", &limit];
    argv.push(bin.to_str().context("h2load path is not UTF-8")?);
    argv.extend(a.iter().map(String::as_str));
    let out = lab.exec(s.client, &argv)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let what = format!("h2load in {} ({})", s.client, proto.as_str());
    match out.status.code() {
        Some(0) => {}
        // timeout(1) reports a KILLed command as 128 + 9.
        Some(137) => bail!(
            "{what} did not finish {} s after its run should have ended and was killed (h2load spins \
             when a server closes its connections in duration mode)",
            HUNG_AFTER.as_secs()
        ),
        _ => bail!("{what} exited with {}:\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
    match parse(&stdout) {
        Ok(r) => Ok(r),
        Err(e) => bail!("{what}: {e}:\n{stdout}"),
    }
}

/// How long past its planned end an h2load run may take before it is killed.
const HUNG_AFTER: Duration = Duration::from_secs(15);

/// CPU seconds (user + system) of this process's waited-for descendants so far: the h2load a
/// `lab exec` ran is one once `meshctl` has reaped it and we have reaped `meshctl`.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK_H1: &str = "starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 1s of warm-up time and 2s of main duration for measurements.
Application protocol: http/1.1

finished in 3.00s, 36274.50 req/s, 39.71MB/s
requests: 72549 total, 72549 started, 72549 done, 72549 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 72549 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 79.43MB (83286252) total, 8.11MB (8505997) headers (space savings 0.00%), 93.33MB (97866752) data
                     min         max         mean         sd        +/- sd
time for request:       24us      5.40ms       110us        91us    94.48%
req/s           :    8987.56     9164.17     9068.21       74.46    50.00%
";

    const ALL_503: &str = "finished in 1.00s, 36001.00 req/s, 9.20MB/s
requests: 36001 total, 36009 started, 36001 done, 0 succeeded, 36001 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 36001 5xx
";

    const REFUSED: &str = "finished in 2.00s, 0.00 req/s, 0B/s
requests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 0B (0) total, 0B (0) headers (space savings 0.00%), 0B (0) data
";

    const SOME_ERRORS: &str = "finished in 5.00s, 1000.00 req/s, 1MB/s
requests: 5000 total, 5010 started, 5000 done, 4900 succeeded, 100 failed, 60 errored, 10 timeout
status codes: 4900 2xx, 0 3xx, 0 4xx, 30 5xx
";

    #[test]
    fn a_clean_run() {
        let r = parse(OK_H1).unwrap();
        assert_eq!(r.rps, 36274.5);
        assert_eq!(
            (r.total, r.done, r.succeeded, r.failed, r.errored, r.timeout),
            (72549, 72549, 72549, 0, 0, 0)
        );
        assert_eq!(r.status, [72549, 0, 0, 0]);
        assert_eq!(r.ok_rps(), 36274.5);
        assert_eq!(r.problem(), None);
    }

    #[test]
    fn failures_are_not_throughput() {
        let r = parse(ALL_503).unwrap();
        assert_eq!(r.ok_rps(), 0.0);
        assert_eq!(
            r.problem().unwrap(),
            "36001 of 36001 requests failed (0 errored, 0 timed out, status 3xx 0, 4xx 0, 5xx 36001)"
        );
        let r = parse(SOME_ERRORS).unwrap();
        assert!((r.ok_rps() - 980.0).abs() < 1e-9);
        assert!(r.problem().unwrap().starts_with("100 of 5000 requests failed (60 errored, 10 timed out"));
        // h2load says nothing when it cannot connect: zero requests is a failure too.
        let r = parse(REFUSED).unwrap();
        assert_eq!(r.ok_rps(), 0.0);
        assert!(r.problem().unwrap().contains("no request"));
    }

    #[test]
    fn damaged_output_is_an_error() {
        assert!(parse("").unwrap_err().contains("finished in"));
        assert!(parse("finished in 1s, x req/s\n").is_err());
        let no_status = OK_H1.replace("status codes:", "codes:");
        assert!(parse(&no_status).unwrap_err().contains("status codes"));
        let no_done = OK_H1.replace(" done,", " finished,");
        assert!(parse(&no_done).unwrap_err().contains("\"done\""));
    }

    #[test]
    fn command_lines() {
        let d = Duration::from_secs(5);
        let w = Duration::from_secs(1);
        let body = Path::new("/tmp/b");
        let h1 = args(Proto::H1, "10.96.0.70:80", "server.l7", "/api/items?size=1024", body, d, w).join(" ");
        assert_eq!(
            h1,
            "--h1 -c 16 -m 1 -t 1 -D 5 --warm-up-time 1 -d /tmp/b --connect-to=10.96.0.70:80 \
             http://server.l7/api/items?size=1024"
        );
        let h2 =
            args(Proto::H2, "10.244.2.82:8081", "s", "/x", body, Duration::from_millis(300), w).join(" ");
        assert_eq!(
            h2,
            "-c 4 -m 16 -t 1 -D 1 --warm-up-time 1 -d /tmp/b --connect-to=10.244.2.82:8081 http://s/x"
        );
    }

    /// h2load itself (CI installs it): the HTTP/1.1 request carries exactly one Host header,
    /// the scenario's, and goes to the target address.
    #[test]
    fn h2load_sends_one_host_header_to_the_target() {
        use std::io::{Read, Write};
        let bin = binary().unwrap_or_else(|e| panic!("{e:#}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head and the 3-byte body.
            while !req.windows(4).any(|w| w == b"\r\n\r\n") || !req.ends_with(b"abc") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&req));
                req.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        std::fs::write(&body, "abc").unwrap();
        let mut a = args(
            Proto::H1,
            &target,
            "server.l7.svc.cluster.local",
            "/api/x?size=3",
            &body,
            Duration::ZERO,
            Duration::ZERO,
        );
        // One request instead of a timed run.
        let d = a.iter().position(|x| x == "-D").unwrap();
        a.splice(d..d + 4, ["-n".to_string(), "1".to_string()]);
        a[2] = "1".into();
        let out = std::process::Command::new(bin).args(&a).output().unwrap();
        let req = server.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(req.starts_with("POST /api/x?size=3 HTTP/1.1\r\n"), "{req}");
        let hosts: Vec<&str> = req.lines().filter(|l| l.to_ascii_lowercase().starts_with("host:")).collect();
        assert_eq!(hosts.len(), 1, "{req}");
        assert_eq!(hosts[0][5..].trim(), "server.l7.svc.cluster.local");
        let r = parse(&stdout).unwrap();
        assert_eq!((r.done, r.succeeded), (1, 1), "{stdout}");
    }

    #[test]
    fn children_cpu_grows_with_a_child() {
        let before = children_cpu_seconds();
        assert!(before.is_finite());
        let st = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(children_cpu_seconds() > before);
    }
}
