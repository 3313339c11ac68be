//! A TCP proxy on 127.0.0.1 that puts network faults between one client and
//! one server, for the fault tests of the `locks` workspace.
//!
//! The proxy listens on a free port of 127.0.0.1 and forwards every connection
//! it accepts to its upstream, a server on the loopback (it refuses any other
//! address). What it does with the bytes is the [`Fault`] in force, which a
//! test changes at any moment with [`FaultProxy::set`]; connections can also
//! be reset at once ([`FaultProxy::reset_connections`]) and one chunk of
//! traffic lost ([`FaultProxy::lose_next`]).
//!
//! It runs on a thread of its own with its own runtime, so a synchronous test
//! that drives other processes and an async test on a busy runtime use it
//! alike, and the proxy is never starved by the code under test. Dropping it
//! stops it and closes every connection.
//!
//! ```no_run
//! use std::time::Duration;
//! use locks_fault_proxy::{Fault, FaultProxy};
//!
//! let proxy = FaultProxy::start("127.0.0.1:2379".parse().unwrap()).unwrap();
//! let url = format!("etcd://{}", proxy.addr()); // the client under test talks to the proxy
//! // ... a client opened on `url` takes a lock ...
//! proxy.set(Fault::Blackhole); // partition the client from the server
//! std::thread::sleep(Duration::from_secs(1));
//! proxy.set(Fault::Pass); // heal
//! ```
//!
//! A short outage ("blip") that the client must ride out is
//! `set(Fault::Refuse)`, [`reset_connections`](FaultProxy::reset_connections),
//! a sleep, `set(Fault::Pass)`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the traffic of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Bytes flow both ways, as without the proxy.
    #[default]
    Pass,
    /// Nothing is forwarded, nothing is lost: bytes wait (in the proxy and
    /// the kernel's buffers) until the fault changes, as in a short
    /// partition that TCP's retransmissions ride out. New connections are
    /// accepted and stalled too.
    Stall,
    /// Connections stay open and every byte either way is read and dropped,
    /// as in a partition. New connections are accepted and blackholed too.
    /// A connection that lost bytes has a hole in its stream and cannot go
    /// on: it is reset when the fault changes, as TCP would have given up
    /// on it.
    Blackhole,
    /// New connections are reset as soon as they are accepted, as by a
    /// server that is down; open connections are not touched.
    Refuse,
    /// Every chunk is forwarded this long after it was read, in order.
    Delay(Duration),
}

/// A direction of the traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server.
    Request,
    /// From the server to the client.
    Reply,
}

impl Direction {
    fn bit(self) -> u8 {
        match self {
            Direction::Request => 1,
            Direction::Reply => 2,
        }
    }
}

/// A running proxy; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// What the proxy's thread and the test share.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// The fault in force; every connection watches it.
    fault: watch::Sender<Fault>,
    /// Bumped by `reset_connections`; every connection watches it.
    resets: watch::Sender<u64>,
    /// `Direction::bit`s of the chunks to lose next.
    lose: AtomicU8,
    /// CLOCK_MONOTONIC of the last fault taking effect, 0 before the first.
    faulted_at: AtomicU64,
    connections: AtomicUsize,
}

impl Shared {
    fn stamp(&self) {
        self.faulted_at.store(monotonic_ns(), Ordering::SeqCst);
    }

    /// Whether the next chunk in `direction` is to be lost (once).
    fn take_lose(&self, direction: Direction) -> bool {
        self.lose.fetch_and(!direction.bit(), Ordering::SeqCst) & direction.bit() != 0
    }
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to
    /// `upstream`, passing all traffic ([`Fault::Pass`]).
    ///
    /// # Errors
    /// `InvalidInput` when `upstream` is not a loopback address (fault tests
    /// send traffic to this machine only); the error of binding the port or
    /// starting the proxy's thread otherwise.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy forwards only to the loopback, not to {upstream}"),
            ));
        }
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            upstream,
            fault: watch::Sender::new(Fault::Pass),
            resets: watch::Sender::new(0),
            lose: AtomicU8::new(0),
            faulted_at: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, serving, stopped).await,
                        Err(error) => eprintln!("fault proxy {addr}: {error}"),
                    }
                });
            })?;
        Ok(FaultProxy {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Puts `fault` in force for every open and future connection, and
    /// stamps [`faulted_at`](Self::faulted_at).
    pub fn set(&self, fault: Fault) {
        self.shared.stamp();
        self.shared.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// Resets (RST, not FIN) every open connection, both to the client and
    /// to the server, and stamps [`faulted_at`](Self::faulted_at).
    pub fn reset_connections(&self) {
        self.shared.stamp();
        self.shared
            .resets
            .send_modify(|generation| *generation += 1);
    }

    /// Loses the next chunk read in `direction` on any connection, then
    /// resets that connection: with [`Direction::Reply`] the server has
    /// acted on a request whose answer the client never sees. The moment
    /// the chunk is lost is stamped in [`faulted_at`](Self::faulted_at).
    pub fn lose_next(&self, direction: Direction) {
        self.shared.lose.fetch_or(direction.bit(), Ordering::SeqCst);
    }

    /// Whether a chunk asked for by [`lose_next`](Self::lose_next) in
    /// `direction` is still waiting to be lost.
    pub fn losing(&self, direction: Direction) -> bool {
        self.shared.lose.load(Ordering::SeqCst) & direction.bit() != 0
    }

    /// CLOCK_MONOTONIC, in nanoseconds, of the last fault that took effect
    /// ([`set`](Self::set), [`reset_connections`](Self::reset_connections) or
    /// a lost chunk); `None` before the first.
    pub fn faulted_at(&self) -> Option<u64> {
        match self.shared.faulted_at.load(Ordering::SeqCst) {
            0 => None,
            at => Some(at),
        }
    }

    /// The connections open through the proxy now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: comparable across the processes of
/// this machine, so a test can order its own stamps and a child's.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer it gets,
    // which points to a live local.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    assert_eq!(status, 0, "CLOCK_MONOTONIC is always available on Linux");
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Accepts connections until the proxy is dropped.
async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((client, _)) if *shared.fault.borrow() == Fault::Refuse => reset(&client),
            Ok((client, _)) => {
                tokio::spawn(connection(client, Arc::clone(&shared)));
            }
            // Out of descriptors or a connection aborted before accept:
            // nothing to forward; try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed its side; the close was passed on.
    Eof,
    /// The connection is to be reset, both sides.
    Reset,
}

/// Counts a connection as open while it lives.
struct Open<'a>(&'a AtomicUsize);

impl<'a> Open<'a> {
    fn new(count: &'a AtomicUsize) -> Open<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Open(count)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forwards one accepted connection until both directions end or it is reset.
async fn connection(client: TcpStream, shared: Arc<Shared>) {
    // A server that is down refuses; the client sees its connection reset.
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _open = Open::new(&shared.connections);
    let mut resets = shared.resets.subscribe();
    let mut faults = shared.fault.subscribe();
    let tainted = AtomicBool::new(false);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // The pumps borrow the halves: they end with this block, before the reset.
    let end = {
        let requests = pump(
            &mut client_read,
            &mut upstream_write,
            Direction::Request,
            &shared,
            &tainted,
        );
        let replies = pump(
            &mut upstream_read,
            &mut client_write,
            Direction::Reply,
            &shared,
            &tainted,
        );
        tokio::pin!(requests, replies);
        let (mut requests_open, mut replies_open) = (true, true);
        loop {
            tokio::select! {
                end = &mut requests, if requests_open => {
                    requests_open = false;
                    if end == End::Reset || !replies_open { break end; }
                }
                end = &mut replies, if replies_open => {
                    replies_open = false;
                    if end == End::Reset || !requests_open { break end; }
                }
                _ = resets.changed() => break End::Reset,
                changed = faults.changed() => {
                    let healed = *faults.borrow_and_update() != Fault::Blackhole;
                    if changed.is_err() || (healed && tainted.load(Ordering::SeqCst)) {
                        break End::Reset;
                    }
                }
            }
        }
    };
    if end == End::Reset {
        // A write half shuts its side down (FIN) when dropped; reunited,
        // the stream closes with the RST alone.
        if let Ok(client) = client_read.reunite(client_write) {
            reset(&client);
        }
        if let Ok(upstream) = upstream_read.reunite(upstream_write) {
            reset(&upstream);
        }
    }
}

/// Forwards the chunks of one direction under the fault in force.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    shared: &Shared,
    tainted: &AtomicBool,
) -> End {
    let mut faults = shared.fault.subscribe();
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        // Stalled: read nothing, so the bytes wait in the kernel's buffers.
        while *faults.borrow_and_update() == Fault::Stall {
            if faults.changed().await.is_err() {
                return End::Reset;
            }
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(read) => read,
            Err(_) => return End::Reset,
        };
        let read_at = tokio::time::Instant::now();
        if shared.take_lose(direction) {
            shared.stamp();
            return End::Reset;
        }
        // A chunk read just before a stall waits for its end.
        loop {
            let fault = *faults.borrow_and_update();
            match fault {
                Fault::Stall => {
                    if faults.changed().await.is_err() {
                        return End::Reset;
                    }
                    continue;
                }
                Fault::Blackhole => tainted.store(true, Ordering::SeqCst),
                Fault::Delay(delay) => {
                    tokio::time::sleep_until(read_at + delay).await;
                    if to.write_all(&buffer[..read]).await.is_err() {
                        return End::Reset;
                    }
                }
                Fault::Pass | Fault::Refuse => {
                    if to.write_all(&buffer[..read]).await.is_err() {
                        return End::Reset;
                    }
                }
            }
            break;
        }
    }
}

/// Makes the socket's close send RST instead of FIN; it closes when the
/// last handle to it is dropped.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
