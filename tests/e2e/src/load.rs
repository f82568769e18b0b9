//! Load generators for the capture benchmark, run inside lab pods against the echo app's raw
//! TCP mode: bulk throughput over one connection, closed-loop round-trip latency, and the
//! rate of short connections. Plain threads and blocking sockets: what is measured is the
//! path, not an async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Bytes per second echoed back over one connection during `dur`.
pub fn throughput(addr: SocketAddr, dur: Duration) -> std::io::Result<Value> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    // The echo app treats a non-HTTP first byte as raw TCP.
    let mut w = s.try_clone()?;
    let mut r = s;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        let buf = vec![0x5au8; 64 * 1024];
        let mut sent = 0u64;
        while !flag.load(Ordering::Relaxed) {
            w.write_all(&buf)?;
            sent += buf.len() as u64;
        }
        w.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut at_deadline = None;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if at_deadline.is_none() && start.elapsed() >= dur {
            at_deadline = Some((got, start.elapsed()));
            stop.store(true, Ordering::Relaxed);
        }
    }
    let sent = writer.join().map_err(|_| std::io::Error::other("writer panicked"))??;
    let (bytes, elapsed) = at_deadline.unwrap_or((got, start.elapsed()));
    Ok(json!({
        "mode": "throughput", "bytes": bytes, "seconds": elapsed.as_secs_f64(),
        "mb_per_s": bytes as f64 / elapsed.as_secs_f64() / 1e6, "sent": sent, "echoed": got,
    }))
}

/// Round trips of `size` bytes, one at a time on one connection, for `count` rounds.
pub fn latency(addr: SocketAddr, count: usize, size: usize) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut us = Vec::with_capacity(count);
    // Warm-up: first round trips pay for connection setup in the proxies.
    for i in 0..count + 100 {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if i >= 100 {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| us[((us.len() as f64 - 1.0) * p).round() as usize];
    Ok(json!({"mode": "latency", "rounds": count, "size": size,
        "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99), "max_us": pct(1.0)}))
}

/// Short connections (connect, 1-byte round trip, close) by `workers` threads during `dur`.
pub fn connrate(addr: SocketAddr, dur: Duration, workers: usize) -> std::io::Result<Value> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                while start.elapsed() < dur {
                    let one = || -> std::io::Result<()> {
                        let mut s = TcpStream::connect(addr)?;
                        s.set_nodelay(true)?;
                        s.write_all(b"x")?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)?;
                        Ok(())
                    };
                    match one() {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    Ok(json!({"mode": "connrate", "workers": workers, "connections": n,
        "failed": failed.load(Ordering::Relaxed), "seconds": secs, "per_s": n as f64 / secs}))
}
