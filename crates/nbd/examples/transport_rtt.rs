//! What a local transport's round trip costs on this machine, with no server work at all:
//! a 28-byte request and a 16-byte reply (an NBD read's header sizes) ping-ponged over a
//! unix socket pair between two processes (as fio and the server are), each receiving side
//! either sleeping (the client in `poll`, as libnbd does, the server in a read) or polling
//! without sleeping. A QD1 client's requests cannot complete faster than the modeled
//! latency plus this round trip plus the client's own work per request.
//!
//! `cargo run --release -p lightnvm-nbd --example transport_rtt [ROUND_TRIPS]`

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Reads exactly `buf.len()` bytes; a polling reader retries on `WouldBlock`; with
/// `wait_in_poll`, sleeps in `poll(2)` before each read.
fn read_full(s: &mut UnixStream, buf: &mut [u8], wait_in_poll: bool) {
    let mut got = 0;
    while got < buf.len() {
        if wait_in_poll {
            let mut p = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on an open descriptor.
            let r = unsafe { libc::poll(&mut p, 1, -1) };
            assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("peer closed"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Median round trip in ns over `rounds` batches of `n` round trips.
fn measure(server_polls: bool, client_polls: bool, n: u32, rounds: usize) -> u64 {
    let (mut client, mut server) = UnixStream::pair().expect("socket pair");
    server.set_nonblocking(server_polls).expect("nonblocking");
    client.set_nonblocking(client_polls).expect("nonblocking");
    let total = n as usize * rounds;
    // SAFETY: the process has one thread here (nothing spawned), so the child may run
    // arbitrary code; it only echoes and exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        drop(client);
        let mut req = [0u8; 28];
        for _ in 0..total {
            read_full(&mut server, &mut req, false);
            server.write_all(&[0u8; 16]).expect("reply");
        }
        std::process::exit(0);
    }
    drop(server);
    let mut per_rt = Vec::with_capacity(rounds);
    let mut reply = [0u8; 16];
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            client.write_all(&[0u8; 28]).expect("request");
            read_full(&mut client, &mut reply, !client_polls);
        }
        per_rt.push(t.elapsed().as_nanos() as u64 / n as u64);
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(status == 0, "echo process failed: {status}");
    per_rt.sort_unstable();
    per_rt[rounds / 2]
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUND_TRIPS: a number"))
        .unwrap_or(20_000);
    println!("unix socket pair, 28-byte request / 16-byte reply, median of 9 batches of {n}");
    for (server_polls, client_polls) in [(false, false), (true, false), (false, true), (true, true)]
    {
        let ns = measure(server_polls, client_polls, n, 9);
        let side = |p| if p { "polls " } else { "sleeps" };
        println!(
            "server {}  client {}  round trip {:>6.2} µs",
            side(server_polls),
            side(client_polls),
            ns as f64 / 1000.0
        );
    }
}
