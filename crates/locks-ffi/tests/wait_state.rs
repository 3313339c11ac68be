//! `locks_guard_wait_state`: C code waits for its lock to be lost or
//! released instead of polling, on a local lock and on an etcd lease that
//! really expires behind a partition (the in-tree fault proxy).

#![allow(unsafe_op_in_unsafe_fn)]

mod common;

use std::ffi::{CString, c_int};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use locks_fault_proxy::{Fault, FaultProxy};
use locks_ffi::*;

/// A client and a guard it holds, freed on drop; shared by reference with
/// the threads of one test (both are documented as usable from any thread).
struct Held {
    client: *mut locks_client,
    guard: *mut locks_guard,
}

// SAFETY: see the struct's doc; they are freed only after every thread joined.
unsafe impl Send for Held {}
// SAFETY: as above.
unsafe impl Sync for Held {}

impl Held {
    /// Opens a client on `global` and takes the Global lock `name`.
    fn take(global: &str, name: &str) -> Held {
        let dir = tempfile::tempdir().unwrap();
        let toml = CString::new(format!(
            "[backends]\nnode = \"file://{}\"\nglobal = \"{global}\"\n",
            dir.path().display()
        ))
        .unwrap();
        let name = CString::new(name).unwrap();
        let (mut client, mut guard) = (null_mut(), null_mut());
        // SAFETY: valid arguments; errors are not asked for.
        unsafe {
            let status = locks_client_open_string(toml.as_ptr(), &mut client, null_mut());
            assert_eq!(status, locks_status::Ok, "open {global}");
            let status = locks_client_lock_name(
                client,
                locks_scope::Global as c_int,
                name.as_ptr(),
                10_000,
                &mut guard,
                null_mut(),
            );
            assert_eq!(status, locks_status::Ok, "lock on {global}");
        }
        Held { client, guard }
    }

    fn state(&self) -> locks_lock_state {
        // SAFETY: live until drop.
        unsafe { locks_guard_state(self.guard) }
    }

    fn wait(&self, seen: locks_lock_state, timeout_ms: i64) -> locks_lock_state {
        // SAFETY: live until drop; only released, never freed, meanwhile.
        unsafe { locks_guard_wait_state(self.guard, seen as c_int, timeout_ms) }
    }

    fn release(&self) -> locks_status {
        // SAFETY: as above.
        unsafe { locks_guard_release(self.guard, null_mut()) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: created by `take`, freed once, no other thread left.
        unsafe {
            locks_guard_free(self.guard);
            locks_client_free(self.client);
        }
    }
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

#[test]
fn null_and_unknown_states_return_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let held = Held::take(&format!("file://{}", dir.path().display()), "w-null");
    // SAFETY: NULL is allowed.
    let on_null = unsafe { locks_guard_wait_state(null(), 0, -1) };
    assert_eq!(on_null, locks_lock_state::Released);
    // SAFETY: live guard; 7 is no state, so it differs from the current one.
    let unknown = unsafe { locks_guard_wait_state(held.guard, 7, -1) };
    assert_eq!(unknown, locks_lock_state::Held);
    assert_eq!(
        held.wait(locks_lock_state::Lost, -1),
        locks_lock_state::Held
    );
    assert_eq!(held.wait(locks_lock_state::Held, 0), locks_lock_state::Held);
}

/// A lock that cannot be lost: the wait runs out its timeout, and a release
/// by another thread ends a wait without one.
#[test]
fn release_from_another_thread_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let held = Held::take(&format!("file://{}", dir.path().display()), "w-release");
    let started = Instant::now();
    assert_eq!(
        held.wait(locks_lock_state::Held, 100),
        locks_lock_state::Held
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| held.wait(locks_lock_state::Held, -1));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the wait ended before the release");
        assert_eq!(held.release(), locks_status::Ok);
        assert_eq!(waiter.join().unwrap(), locks_lock_state::Released);
    });
    assert_eq!(
        held.wait(locks_lock_state::Held, -1),
        locks_lock_state::Released
    );
}

/// The same on a server lock: the release wakes the waiter (the follower
/// task keeps waiting on the server's state, which does not change).
#[test]
fn release_ends_the_wait_on_etcd() {
    let Some(etcd) = common::server("LOCKS_TEST_ETCD") else {
        return;
    };
    let url = format!("etcd://{etcd}?prefix=%2F{}%2F", unique("w-rel"));
    let held = Held::take(&url, "w-release");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| held.wait(locks_lock_state::Held, -1));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "the wait ended before the release");
        assert_eq!(held.release(), locks_status::Ok);
        assert_eq!(waiter.join().unwrap(), locks_lock_state::Released);
    });
}

/// An etcd lease that expires behind a partition: the waiter, blocked with
/// a 10 s timeout, wakes with `LOST` when the guard reports it (a poller reading
/// `locks_guard_state` every millisecond gives the reference time).
#[test]
fn a_lease_lost_behind_a_partition_wakes_the_waiter() {
    let Some(etcd) = common::server("LOCKS_TEST_ETCD") else {
        return;
    };
    let proxy = FaultProxy::start(etcd.parse().expect("LOCKS_TEST_ETCD is host:port")).unwrap();
    let url = format!(
        "etcd://{}?ttl=2s&connect_timeout=500ms&prefix=%2F{}%2F",
        proxy.addr(),
        unique("w-lost")
    );
    let held = Held::take(&url, "w-lost");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut seen = locks_lock_state::Held;
            let mut states = Vec::new();
            let limit = Instant::now() + Duration::from_secs(20);
            while !matches!(seen, locks_lock_state::Lost | locks_lock_state::Released)
                && Instant::now() < limit
            {
                seen = held.wait(seen, 10_000);
                states.push(seen);
            }
            (Instant::now(), states)
        });
        let poller = s.spawn(|| {
            let limit = Instant::now() + Duration::from_secs(20);
            while Instant::now() < limit {
                if held.state() == locks_lock_state::Lost {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !waiter.is_finished(),
            "the wait ended while the lock was held"
        );
        let cut = Instant::now();
        proxy.set(Fault::Blackhole);
        let polled = poller
            .join()
            .unwrap()
            .expect("the guard never reported Lost");
        let (woke, states) = waiter.join().unwrap();
        assert_eq!(states.last(), Some(&locks_lock_state::Lost), "{states:?}");
        // Loss is reported before the 2 s lease can have expired on the server.
        assert!(polled - cut < Duration::from_secs(2), "{:?}", polled - cut);
        // Woken by the change, not by a timeout or a later poll of its own.
        let late = woke.saturating_duration_since(polled);
        assert!(
            late < Duration::from_millis(250),
            "woke {late:?} after the guard reported Lost"
        );
        proxy.set(Fault::Pass);
    });
    assert_eq!(held.release(), locks_status::Lost);
}
