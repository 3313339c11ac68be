//! Every fault of the proxy, between a blocking client and an echo server on
//! 127.0.0.1 that counts the bytes it received.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use locks_fault_proxy::{Direction, Fault, FaultProxy, monotonic_ns};

/// An echo server on a free port; `received` counts the bytes it read.
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut buffer = [0_u8; 4096];
                    loop {
                        match stream.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => {
                                counter.fetch_add(read, Ordering::SeqCst);
                                if stream.write_all(&buffer[..read]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo { addr, received }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// Sends `message` and reads its echo.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut echo = vec![0_u8; message.len()];
    stream.read_exact(&mut echo)?;
    Ok(echo)
}

/// Waits until `condition` holds, for at most 5 s.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Reads until the connection fails or ends; true when it was reset.
fn read_reset(stream: &mut TcpStream) -> bool {
    let mut buffer = [0_u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(error) => return is_reset(&error),
        }
    }
}

#[test]
fn passes_traffic_both_ways() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    assert_eq!(proxy.upstream(), echo.addr);
    assert_eq!(proxy.faulted_at(), None);
    let mut stream = connect(&proxy);
    assert_eq!(round_trip(&mut stream, b"hello").expect("echo"), b"hello");
    eventually("one open connection", || proxy.connections() == 1);
    drop(stream);
    eventually("no open connection", || proxy.connections() == 0);
}

#[test]
fn refuses_upstreams_off_the_loopback() {
    let error = FaultProxy::start("192.0.2.1:2379".parse().expect("addr")).expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("192.0.2.1:2379"), "{error}");
}

#[test]
fn stall_holds_bytes_and_loses_none() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    let before = monotonic_ns();
    proxy.set(Fault::Stall);
    assert!(proxy.faulted_at().expect("stamped") >= before);
    stream.write_all(b"held").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(echo.received(), 4, "a stalled chunk reached the server");
    proxy.set(Fault::Pass);
    let mut echoed = [0_u8; 4];
    stream
        .read_exact(&mut echoed)
        .expect("echo after the stall");
    assert_eq!(&echoed, b"held");
}

#[test]
fn blackhole_drops_bytes_and_resets_at_heal() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    proxy.set(Fault::Blackhole);
    stream.write_all(b"gone").expect("write");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buffer = [0_u8; 4];
    let error = stream.read(&mut buffer).expect_err("nothing comes back");
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    assert_eq!(echo.received(), 4, "a blackholed chunk reached the server");
    // A new connection is accepted, and blackholed too.
    let mut late = connect(&proxy);
    late.write_all(b"late").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(echo.received(), 4);
    proxy.set(Fault::Pass);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(read_reset(&mut stream), "the holed stream is reset at heal");
    assert!(read_reset(&mut late), "the holed stream is reset at heal");
    // A connection made after the heal works.
    let mut fresh = connect(&proxy);
    assert_eq!(round_trip(&mut fresh, b"ok").expect("echo"), b"ok");
}

#[test]
fn refuse_resets_new_connections_only() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut open = connect(&proxy);
    round_trip(&mut open, b"warm").expect("echo");
    proxy.set(Fault::Refuse);
    let mut refused = connect(&proxy);
    assert!(read_reset(&mut refused), "a new connection is reset");
    assert_eq!(
        round_trip(&mut open, b"still").expect("open connection"),
        b"still"
    );
    proxy.set(Fault::Pass);
    let mut fresh = connect(&proxy);
    assert_eq!(round_trip(&mut fresh, b"ok").expect("echo"), b"ok");
}

#[test]
fn reset_connections_resets_open_ones() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    let before = monotonic_ns();
    proxy.reset_connections();
    assert!(proxy.faulted_at().expect("stamped") >= before);
    assert!(read_reset(&mut stream), "the open connection is reset");
    eventually("no open connection", || proxy.connections() == 0);
    let mut fresh = connect(&proxy);
    assert_eq!(round_trip(&mut fresh, b"ok").expect("echo"), b"ok");
}

#[test]
fn a_lost_reply_reaches_the_server_but_not_the_client() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    proxy.lose_next(Direction::Reply);
    assert!(proxy.losing(Direction::Reply));
    stream.write_all(b"acted").expect("write");
    assert!(read_reset(&mut stream), "the connection is reset");
    assert_eq!(echo.received(), 9, "the request reached the server");
    assert!(!proxy.losing(Direction::Reply), "only one chunk is lost");
    let mut fresh = connect(&proxy);
    assert_eq!(round_trip(&mut fresh, b"ok").expect("echo"), b"ok");
}

#[test]
fn a_lost_request_never_reaches_the_server() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    proxy.lose_next(Direction::Request);
    stream.write_all(b"lost").expect("write");
    assert!(read_reset(&mut stream), "the connection is reset");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(echo.received(), 4, "the lost request reached the server");
    let mut fresh = connect(&proxy);
    assert_eq!(round_trip(&mut fresh, b"ok").expect("echo"), b"ok");
}

#[test]
fn delay_forwards_late_and_in_order() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    proxy.set(Fault::Delay(Duration::from_millis(150)));
    let sent = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").expect("echo"), b"slow");
    // One delay each way; the lower bound is what the fault promises.
    assert!(sent.elapsed() >= Duration::from_millis(300));
    stream.write_all(b"a").expect("write");
    stream.write_all(b"b").expect("write");
    let mut echoed = [0_u8; 2];
    stream.read_exact(&mut echoed).expect("echo");
    assert_eq!(&echoed, b"ab");
}

#[test]
fn a_dead_upstream_resets_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let proxy = FaultProxy::start(addr).expect("proxy");
    let mut stream = connect(&proxy);
    assert!(read_reset(&mut stream), "the client sees a refused server");
}

#[test]
fn dropping_the_proxy_closes_its_connections() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, b"warm").expect("echo");
    drop(proxy);
    let mut buffer = [0_u8; 4];
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(read) => panic!("read {read} bytes from a stopped proxy"),
        Err(error) => assert!(is_reset(&error), "{error}"),
    }
}
