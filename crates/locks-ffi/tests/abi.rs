//! The exports called directly from Rust, as C would call them: lifecycle,
//! catalog, contention across threads, every bad-input path, and the pinned
//! status numbers.

#![allow(unsafe_op_in_unsafe_fn)]

mod common;

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::{null, null_mut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use locks_ffi::*;

/// A client on a private lock directory, and the directory.
struct Fixture {
    client: *mut locks_client,
    _dir: tempfile::TempDir,
}

// SAFETY: the client is documented as usable from many threads at once.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[backends]\nprocess = \"memory://\"\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
            dir.path().display()
        );
        let client = open_string(&toml).unwrap_or_else(|(s, m)| panic!("{s:?}: {m}"));
        Fixture { client, _dir: dir }
    }

    fn client(&self) -> &locks_client {
        // SAFETY: live until drop.
        unsafe { &*self.client }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: created by open_string, freed once.
        unsafe { locks_client_free(self.client) };
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Takes an error object apart (and frees it).
fn take_error(status: locks_status, err: *mut locks_error) -> (locks_status, String) {
    assert!(!err.is_null(), "{status:?} came without an error object");
    // SAFETY: a live error from the library.
    unsafe {
        assert_eq!(locks_error_status(err), status);
        let message = CStr::from_ptr(locks_error_message(err))
            .to_str()
            .unwrap()
            .to_owned();
        locks_error_free(err);
        (status, message)
    }
}

fn open_string(toml: &str) -> Result<*mut locks_client, (locks_status, String)> {
    let toml = cstring(toml);
    let mut client = null_mut();
    let mut err = null_mut();
    // SAFETY: valid arguments.
    let status = unsafe { locks_client_open_string(toml.as_ptr(), &mut client, &mut err) };
    if status == locks_status::Ok {
        assert!(err.is_null() && !client.is_null());
        Ok(client)
    } else {
        assert!(client.is_null(), "client written on failure");
        Err(take_error(status, err))
    }
}

/// A guard that frees itself.
struct Guard(*mut locks_guard);

// SAFETY: guards may be released and freed from any thread.
unsafe impl Send for Guard {}
// SAFETY: a live guard may be read and released from several threads at once.
unsafe impl Sync for Guard {}

impl Guard {
    fn name(&self) -> &str {
        // SAFETY: live guard; the name is valid until free.
        unsafe { CStr::from_ptr(locks_guard_name(self.0)) }
            .to_str()
            .unwrap()
    }

    fn release(&self) -> Result<(), (locks_status, String)> {
        let mut err = null_mut();
        // SAFETY: live guard.
        let status = unsafe { locks_guard_release(self.0, &mut err) };
        if status == locks_status::Ok {
            Ok(())
        } else {
            Err(take_error(status, err))
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: freed once.
        unsafe { locks_guard_free(self.0) };
    }
}

/// The guard of a successful acquire, or its status and message; either way
/// checks that a failure wrote no guard and a success no error.
fn acquired(
    status: locks_status,
    guard: *mut locks_guard,
    err: *mut locks_error,
) -> Result<Guard, (locks_status, String)> {
    if status == locks_status::Ok {
        assert!(err.is_null() && !guard.is_null());
        Ok(Guard(guard))
    } else {
        assert!(guard.is_null(), "guard written on failure");
        Err(take_error(status, err))
    }
}

/// `locks_client_lock`, or `locks_client_lock_cancellable` with `cancel`.
fn lock_with(
    client: &locks_client,
    id: &str,
    params: &[(&str, &str)],
    timeout_ms: i64,
    cancel: Option<&Cancel>,
) -> Result<Guard, (locks_status, String)> {
    let id = cstring(id);
    let keys: Vec<CString> = params.iter().map(|(k, _)| cstring(k)).collect();
    let values: Vec<CString> = params.iter().map(|(_, v)| cstring(v)).collect();
    let key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    let (keys, values, n) = (key_ptrs.as_ptr(), value_ptrs.as_ptr(), params.len());
    let mut guard = null_mut();
    let mut err = null_mut();
    // SAFETY (both): valid arguments.
    let status = match cancel {
        None => unsafe {
            locks_client_lock(
                client,
                id.as_ptr(),
                keys,
                values,
                n,
                timeout_ms,
                &mut guard,
                &mut err,
            )
        },
        Some(cancel) => unsafe {
            locks_client_lock_cancellable(
                client,
                id.as_ptr(),
                keys,
                values,
                n,
                timeout_ms,
                cancel.0,
                &mut guard,
                &mut err,
            )
        },
    };
    acquired(status, guard, err)
}

fn lock(
    client: &locks_client,
    id: &str,
    params: &[(&str, &str)],
    timeout_ms: i64,
) -> Result<Guard, (locks_status, String)> {
    lock_with(client, id, params, timeout_ms, None)
}

fn lock_name(
    client: &locks_client,
    scope: c_int,
    name: &str,
    timeout_ms: i64,
) -> Result<Guard, (locks_status, String)> {
    let name = cstring(name);
    let mut guard = null_mut();
    let mut err = null_mut();
    // SAFETY: valid arguments.
    let status = unsafe {
        locks_client_lock_name(
            client,
            scope,
            name.as_ptr(),
            timeout_ms,
            &mut guard,
            &mut err,
        )
    };
    acquired(status, guard, err)
}

fn status_of<T>(r: Result<T, (locks_status, String)>) -> (locks_status, String) {
    match r {
        Ok(_) => panic!("expected a failure"),
        Err(e) => e,
    }
}

unsafe fn str_of<'a>(p: *const c_char) -> &'a str {
    assert!(!p.is_null());
    CStr::from_ptr(p).to_str().unwrap()
}

#[test]
fn catalog_is_readable_by_index_and_by_id() {
    let f = Fixture::new();
    let client = f.client();
    // SAFETY: live client; entries are borrowed until the client is freed.
    unsafe {
        let n = locks_client_catalog_len(client);
        assert!(n > 10, "{n}");
        let mut ids = Vec::new();
        for i in 0..n {
            let e = locks_client_catalog_entry(client, i);
            ids.push(str_of(locks_catalog_entry_id(e)).to_owned());
            let count = locks_catalog_entry_parameter_count(e);
            for j in 0..count {
                let p = str_of(locks_catalog_entry_parameter(e, j));
                assert!(str_of(locks_catalog_entry_template(e)).contains(&format!("{{{p}}}")));
            }
            assert!(locks_catalog_entry_parameter(e, count).is_null());
        }
        assert!(locks_client_catalog_entry(client, n).is_null());
        assert!(ids.contains(&"lio".to_owned()) && ids.contains(&"infinidat".to_owned()));

        let id = cstring("infinidat");
        let mut entry = null();
        let status = locks_client_catalog_find(client, id.as_ptr(), &mut entry, null_mut());
        assert_eq!(status, locks_status::Ok);
        assert_eq!(str_of(locks_catalog_entry_id(entry)), "infinidat");
        assert_eq!(locks_catalog_entry_scope(entry), locks_scope::Global);
        assert_eq!(
            str_of(locks_catalog_entry_template(entry)),
            "infinidat-{management_address}-lock"
        );
        assert_eq!(locks_catalog_entry_parameter_count(entry), 1);
        assert_eq!(
            str_of(locks_catalog_entry_parameter(entry, 0)),
            "management_address"
        );
        assert_eq!(
            str_of(locks_catalog_entry_driver(entry)),
            "Infinidat driver"
        );
        assert!(!str_of(locks_catalog_entry_critical_section(entry)).is_empty());

        let lio = cstring("lio");
        let status = locks_client_catalog_find(client, lio.as_ptr(), &mut entry, null_mut());
        assert_eq!(status, locks_status::Ok);
        assert_eq!(locks_catalog_entry_scope(entry), locks_scope::Node);

        let bogus = cstring("no-such-lock");
        let before = entry;
        let mut err = null_mut();
        let status = locks_client_catalog_find(client, bogus.as_ptr(), &mut entry, &mut err);
        let (_, message) = take_error(status, err);
        assert_eq!(status, locks_status::UnknownLock);
        assert!(
            message.contains("no-such-lock") && message.contains("infinidat"),
            "{message}"
        );
        assert_eq!(entry, before, "out-param written on failure");
    }
}

#[test]
fn lock_read_release_free() {
    let f = Fixture::new();
    let g = lock(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        1000,
    )
    .unwrap();
    assert_eq!(g.name(), "infinidat-10.0.0.1-lock");
    // SAFETY: live guard.
    unsafe {
        assert_eq!(locks_guard_scope(g.0), locks_scope::Global);
        assert!(locks_guard_token(g.0) > 0);
        assert!(!locks_guard_is_lost(g.0));
        assert_eq!(locks_guard_state(g.0), locks_lock_state::Held);
    }
    g.release().unwrap();
    // SAFETY: live (released) guard.
    unsafe {
        assert_eq!(locks_guard_state(g.0), locks_lock_state::Released);
        assert!(!locks_guard_is_lost(g.0));
    }
    assert_eq!(
        g.name(),
        "infinidat-10.0.0.1-lock",
        "readable after release"
    );
    let (status, message) = g.release().unwrap_err();
    assert_eq!(status, locks_status::AlreadyReleased);
    assert!(message.contains("infinidat-10.0.0.1-lock"), "{message}");
    // Released, so free does not release again; and the lock is free.
    drop(g);
    let again = lock(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        0,
    )
    .unwrap();
    drop(again); // free releases a held guard
    lock(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        0,
    )
    .unwrap()
    .release()
    .unwrap();
}

#[test]
fn contention_try_once_timeout_and_reentry() {
    let f = Arc::new(Fixture::new());
    let held = lock_name(f.client(), LOCKS_SCOPE_NODE, "contended", 0).unwrap();
    assert_eq!(held.name(), "contended");

    // The same thread asking again: detected at once (per-thread check on by default).
    let (status, message) = status_of(lock_name(f.client(), LOCKS_SCOPE_NODE, "contended", -1));
    assert_eq!(status, locks_status::WouldDeadlock, "{message}");

    // Another thread: try once, then a timeout.
    let f2 = Arc::clone(&f);
    std::thread::spawn(move || {
        let (status, _) = status_of(lock_name(f2.client(), LOCKS_SCOPE_NODE, "contended", 0));
        assert_eq!(status, locks_status::WouldBlock);
        let start = Instant::now();
        let (status, message) =
            status_of(lock_name(f2.client(), LOCKS_SCOPE_NODE, "contended", 150));
        assert_eq!(status, locks_status::Timeout, "{message}");
        assert!(start.elapsed() >= Duration::from_millis(150));
    })
    .join()
    .unwrap();

    // With the check off, the same thread is an ordinary waiter.
    // SAFETY: no other thread uses the client right now.
    let status = unsafe { locks_client_set_reentry_check(f.client, false, null_mut()) };
    assert_eq!(status, locks_status::Ok);
    let (status, _) = status_of(lock_name(f.client(), LOCKS_SCOPE_NODE, "contended", 0));
    assert_eq!(status, locks_status::WouldBlock);
    held.release().unwrap();
}

#[test]
fn many_threads_never_overlap() {
    let f = Arc::new(Fixture::new());
    let inside = Arc::new(AtomicBool::new(false));
    let entries = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (f, inside, entries) = (Arc::clone(&f), Arc::clone(&inside), Arc::clone(&entries));
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let g = lock_name(f.client(), LOCKS_SCOPE_NODE, "shared", -1).unwrap();
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    entries.fetch_add(1, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.store(false, Ordering::SeqCst);
                    g.release().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(entries.load(Ordering::SeqCst), 200);
}

#[test]
fn a_guard_outlives_its_client_handle() {
    let dir = tempfile::tempdir().unwrap();
    let client = open_string(&format!(
        "[backends]\nnode = \"file://{}\"\n",
        dir.path().display()
    ))
    .unwrap();
    // SAFETY: live client.
    let g = lock(unsafe { &*client }, "lio", &[], 0).unwrap();
    assert_eq!(g.name(), "lioadm");
    // SAFETY: freed once, while the guard lives on.
    unsafe { locks_client_free(client) };
    assert_eq!(g.name(), "lioadm");
    g.release().unwrap();
}

/// A memory (Process) guard: readable and releasable after its client
/// handle is freed, and released by exactly one of many threads racing to.
#[test]
fn a_process_guard_is_released_once_whoever_races_for_it() {
    let client = open_string("[backends]\nprocess = \"memory://\"\n").unwrap();
    // SAFETY: live client.
    let c = unsafe { &*client };
    for round in 0..50 {
        let g = Arc::new(lock_name(c, LOCKS_SCOPE_PROCESS, "raced", 0).unwrap());
        // SAFETY: live guard.
        unsafe {
            assert_eq!(locks_guard_state(g.0), locks_lock_state::Held);
            assert_eq!(locks_guard_scope(g.0), locks_scope::Process);
        }
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let outcomes: Vec<_> = (0..4)
            .map(|_| {
                let (g, barrier) = (Arc::clone(&g), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    g.release().map_err(|(status, _)| status)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Ok(()) | Err(locks_status::AlreadyReleased))),
            "{outcomes:?}"
        );
        // SAFETY: live guard.
        assert_eq!(
            unsafe { locks_guard_state(g.0) },
            locks_lock_state::Released
        );
        assert!(
            lock_name(c, LOCKS_SCOPE_PROCESS, "raced", 0).is_ok(),
            "free again"
        );
    }
    let g = lock_name(c, LOCKS_SCOPE_PROCESS, "outlives", 0).unwrap();
    // SAFETY: freed once, while the guard lives on.
    unsafe { locks_client_free(client) };
    assert_eq!(g.name(), "outlives");
    g.release().unwrap();
}

#[test]
fn template_errors_map_to_their_status() {
    let f = Fixture::new();
    let c = f.client();
    let (s, m) = status_of(lock(c, "no-such-lock", &[], 0));
    assert_eq!(s, locks_status::UnknownLock, "{m}");
    let (s, m) = status_of(lock(c, "infinidat", &[], 0));
    assert_eq!(s, locks_status::MissingParameter, "{m}");
    assert!(m.contains("management_address"), "{m}");
    let (s, m) = status_of(lock(
        c,
        "infinidat",
        &[("management_address", "a"), ("extra", "b")],
        0,
    ));
    assert_eq!(s, locks_status::UnknownParameter, "{m}");
    assert!(m.contains("extra"), "{m}");
    let (s, m) = status_of(lock(
        c,
        "infinidat",
        &[("management_address", "a"), ("management_address", "b")],
        0,
    ));
    assert_eq!(s, locks_status::InvalidArgument, "{m}");
    assert!(m.contains("twice"), "{m}");
    let (s, m) = status_of(lock(c, "infinidat", &[("management_address", "a\nb")], 0));
    assert_eq!(s, locks_status::InvalidName, "{m}");
    let (s, m) = status_of(lock_name(c, LOCKS_SCOPE_NODE, "", 0));
    assert_eq!(s, locks_status::InvalidName, "{m}");
    let (s, m) = status_of(lock_name(c, 3, "x", 0));
    assert_eq!(s, locks_status::InvalidArgument, "{m}");
    assert!(m.contains("scope"), "{m}");
    let (s, m) = status_of(lock_name(c, -1, "x", 0));
    assert_eq!(s, locks_status::InvalidArgument, "{m}");
}

const LOCKS_SCOPE_NODE: c_int = locks_scope::Node as c_int;

#[test]
fn null_arguments_are_reported_by_name() {
    let f = Fixture::new();
    let c: *const locks_client = f.client();
    let id = cstring("infinidat");
    let key = cstring("management_address");
    let value = cstring("10.0.0.1");
    let keys = [key.as_ptr()];
    let values = [value.as_ptr()];
    let null_key = [null::<c_char>()];
    let mut guard = null_mut();
    let check = |status: locks_status, err: *mut locks_error, arg: &str| {
        let (status, message) = take_error(status, err);
        assert_eq!(status, locks_status::NullArgument, "{message}");
        assert!(message.contains(&format!("`{arg}`")), "{arg}: {message}");
    };
    // SAFETY: NULL is what is being tested; everything else is valid.
    unsafe {
        let mut err = null_mut();
        let s = locks_client_lock(
            null(),
            id.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "client");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            null(),
            keys.as_ptr(),
            values.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "id");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            null(),
            values.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "keys");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            keys.as_ptr(),
            null(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "values");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            null_key.as_ptr(),
            values.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "keys[0]");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            keys.as_ptr(),
            null_key.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        check(s, err, "values[0]");
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            1,
            0,
            null_mut(),
            &mut err,
        );
        check(s, err, "guard_out");
        assert!(guard.is_null());
        // A NULL err_out is allowed: only the status comes back.
        let s = locks_client_lock(c, null(), null(), null(), 0, 0, &mut guard, null_mut());
        assert_eq!(s, locks_status::NullArgument);

        let mut err = null_mut();
        let s = locks_client_lock_name(c, 1, null(), 0, &mut guard, &mut err);
        check(s, err, "name");
        let mut err = null_mut();
        let s = locks_client_lock_name(null(), 1, id.as_ptr(), 0, &mut guard, &mut err);
        check(s, err, "client");

        let mut client = null_mut();
        let mut err = null_mut();
        check(
            locks_client_open_file(null(), &mut client, &mut err),
            err,
            "path",
        );
        let mut err = null_mut();
        check(
            locks_client_open_file(id.as_ptr(), null_mut(), &mut err),
            err,
            "client_out",
        );
        let mut err = null_mut();
        check(
            locks_client_open_string(null(), &mut client, &mut err),
            err,
            "toml",
        );
        let mut err = null_mut();
        check(
            locks_client_open_default(null_mut(), &mut err),
            err,
            "client_out",
        );
        assert!(client.is_null());

        let mut entry = null();
        let mut err = null_mut();
        check(
            locks_client_catalog_find(null(), id.as_ptr(), &mut entry, &mut err),
            err,
            "client",
        );
        let mut err = null_mut();
        check(
            locks_client_catalog_find(c, null(), &mut entry, &mut err),
            err,
            "id",
        );
        let mut err = null_mut();
        check(
            locks_client_catalog_find(c, id.as_ptr(), null_mut(), &mut err),
            err,
            "entry_out",
        );
        let mut err = null_mut();
        check(locks_guard_release(null_mut(), &mut err), err, "guard");
        let mut err = null_mut();
        check(
            locks_client_set_reentry_check(null_mut(), true, &mut err),
            err,
            "client",
        );

        // Accessors and frees: documented defaults, no crash.
        assert!(locks_guard_name(null()).is_null());
        assert_eq!(locks_guard_scope(null()), locks_scope::Process);
        assert_eq!(locks_guard_token(null()), 0);
        assert!(!locks_guard_is_lost(null()));
        assert_eq!(locks_guard_state(null()), locks_lock_state::Released);
        assert_eq!(locks_client_catalog_len(null()), 0);
        assert!(locks_client_catalog_entry(null(), 0).is_null());
        assert!(locks_catalog_entry_id(null()).is_null());
        assert!(locks_catalog_entry_template(null()).is_null());
        assert!(locks_catalog_entry_driver(null()).is_null());
        assert!(locks_catalog_entry_critical_section(null()).is_null());
        assert_eq!(locks_catalog_entry_scope(null()), locks_scope::Process);
        assert_eq!(locks_catalog_entry_parameter_count(null()), 0);
        assert!(locks_catalog_entry_parameter(null(), 0).is_null());
        assert_eq!(locks_client_warnings_len(null()), 0);
        assert!(locks_client_warning(null(), 0).is_null());
        assert_eq!(locks_error_status(null()), locks_status::Ok);
        assert!(locks_error_message(null()).is_null());
        locks_error_free(null_mut());
        locks_guard_free(null_mut());
        locks_client_free(null_mut());
    }
}

#[test]
fn invalid_utf8_and_bad_counts_are_errors() {
    let f = Fixture::new();
    let c: *const locks_client = f.client();
    let bad = c"lio\xff".as_ptr();
    let id = cstring("infinidat");
    let key = cstring("management_address");
    let mut guard = null_mut();
    // SAFETY: valid pointers; the bytes are what is being tested.
    unsafe {
        let mut err = null_mut();
        let s = locks_client_lock(c, bad, null(), null(), 0, 0, &mut guard, &mut err);
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::InvalidUtf8);
        assert!(m.contains("`id`") && m.contains("offset 3"), "{m}");

        let keys = [key.as_ptr()];
        let values = [bad];
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            1,
            0,
            &mut guard,
            &mut err,
        );
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::InvalidUtf8);
        assert!(m.contains("`values[0]`"), "{m}");

        let mut err = null_mut();
        let s = locks_client_lock_name(c, 1, bad, 0, &mut guard, &mut err);
        assert_eq!(take_error(s, err).0, locks_status::InvalidUtf8);

        let mut client = null_mut();
        let mut err = null_mut();
        let s = locks_client_open_string(bad, &mut client, &mut err);
        assert_eq!(take_error(s, err).0, locks_status::InvalidUtf8);

        let mut entry = null();
        let mut err = null_mut();
        let s = locks_client_catalog_find(c, bad, &mut entry, &mut err);
        assert_eq!(take_error(s, err).0, locks_status::InvalidUtf8);

        // A count cast from -1, with arrays that hold one element.
        let values = [key.as_ptr()];
        let mut err = null_mut();
        let s = locks_client_lock(
            c,
            id.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            usize::MAX,
            0,
            &mut guard,
            &mut err,
        );
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::InvalidArgument);
        assert!(m.contains("n_params"), "{m}");
    }
    assert!(guard.is_null());
}

#[test]
fn configuration_errors() {
    let (s, m) = open_string("prefx = \"x\"\n").unwrap_err();
    assert_eq!(s, locks_status::InvalidConfig);
    assert!(m.contains("prefx"), "{m}");
    let (s, m) = open_string("[backends]\nnode = \"memory://\"\n").unwrap_err();
    assert_eq!(s, locks_status::InvalidConfig, "{m}");
    let path = cstring("/nonexistent/locks.toml");
    let mut client = null_mut();
    let mut err = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe { locks_client_open_file(path.as_ptr(), &mut client, &mut err) };
    let (s, m) = take_error(s, err);
    assert_eq!(s, locks_status::Io);
    assert!(m.contains("/nonexistent/locks.toml"), "{m}");
    assert!(client.is_null());
}

#[test]
fn open_file_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!(
            "prefix = \"cinder-\"\n[backends]\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let path = cstring(config.to_str().unwrap());
    let mut client = null_mut();
    // SAFETY: valid arguments.
    let s = unsafe { locks_client_open_file(path.as_ptr(), &mut client, null_mut()) };
    assert_eq!(s, locks_status::Ok);
    // SAFETY: live client.
    let g = lock(unsafe { &*client }, "lio", &[], 0).unwrap();
    assert_eq!(g.name(), "cinder-lioadm");
    assert!(dir.path().join("cinder-lioadm").exists());
    drop(g);
    // SAFETY: freed once.
    unsafe { locks_client_free(client) };
}

#[test]
fn status_names_and_unknown_numbers() {
    // SAFETY: the names are static strings.
    unsafe {
        assert_eq!(str_of(locks_status_name(9)), "would_block");
        assert_eq!(str_of(locks_status_name(104)), "invalid_argument");
        assert_eq!(str_of(locks_status_name(17)), "unknown");
        assert_eq!(str_of(locks_status_name(-1)), "unknown");
    }
}

/// The numbers are part of the ABI: pinned here, so renumbering fails a test.
#[test]
fn status_numbers_are_pinned() {
    let pinned: [(&str, c_int); 23] = [
        ("ok", 0),
        ("invalid_template", 1),
        ("missing_parameter", 2),
        ("unknown_parameter", 3),
        ("invalid_name", 4),
        ("unknown_lock", 5),
        ("invalid_catalog", 6),
        ("invalid_config", 7),
        ("unsupported", 8),
        ("would_block", 9),
        ("timeout", 10),
        ("would_deadlock", 11),
        ("lost", 12),
        ("unavailable", 13),
        ("permission_denied", 14),
        ("io", 15),
        ("internal", 16),
        ("null_argument", 100),
        ("invalid_utf8", 101),
        ("panic", 102),
        ("already_released", 103),
        ("invalid_argument", 104),
        ("cancelled", 105),
    ];
    let actual: Vec<(&str, c_int)> = locks_status::all()
        .map(|s| (s.as_str(), s as c_int))
        .collect();
    assert_eq!(actual, pinned);
    assert_eq!(locks_scope::Process as c_int, 0);
    assert_eq!(locks_scope::Node as c_int, 1);
    assert_eq!(locks_scope::Global as c_int, 2);
}

/// Every `ErrorKind` has its own status, named like it. The kinds are read
/// from the source of locks-core, so a kind added there without a status
/// here fails this test.
#[test]
fn every_error_kind_has_its_status() {
    use locks::ErrorKind;
    let source = include_str!("../../locks-core/src/error.rs");
    let body = source
        .split("pub enum ErrorKind {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("ErrorKind in locks-core/src/error.rs");
    let variants: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#') && l.ends_with(','))
        .map(|l| l.trim_end_matches(','))
        .collect();
    let known = [
        ErrorKind::InvalidTemplate,
        ErrorKind::MissingParameter,
        ErrorKind::UnknownParameter,
        ErrorKind::InvalidName,
        ErrorKind::UnknownLock,
        ErrorKind::InvalidCatalog,
        ErrorKind::InvalidConfig,
        ErrorKind::Unsupported,
        ErrorKind::WouldBlock,
        ErrorKind::Timeout,
        ErrorKind::WouldDeadlock,
        ErrorKind::Lost,
        ErrorKind::Unavailable,
        ErrorKind::PermissionDenied,
        ErrorKind::Io,
        ErrorKind::Internal,
    ];
    let known_names: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
    assert_eq!(
        variants, known_names,
        "ErrorKind changed: give each new kind a LOCKS_STATUS_* value (the next free number \
         below 100) in crates/locks-ffi/src/status.rs, then regenerate include/locks.h"
    );
    for (i, kind) in known.iter().enumerate() {
        let status = locks_status::from_kind(*kind);
        assert_eq!(status as usize, i + 1, "{kind:?}");
        assert_eq!(status.as_str(), kind.as_str());
    }
}

/// Global locks through the C ABI on the server backends compiled into the library.
#[test]
fn global_locks_on_etcd_zookeeper_and_redis() {
    for (var, scheme) in [
        ("LOCKS_TEST_ETCD", "etcd"),
        ("LOCKS_TEST_ZK", "zookeeper"),
        ("LOCKS_TEST_REDIS", "redis"),
    ] {
        let Some(mut addr) = common::server(var) else {
            continue;
        };
        if scheme == "redis" {
            // `ci/redis.sh start`'s server takes a password (user `default`).
            let password = std::env::var("LOCKS_TEST_REDIS_PASSWORD").unwrap_or_default();
            addr = format!(":{password}@{addr}");
        }
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[backends]\nnode = \"file://{}\"\nglobal = \"{scheme}://{addr}\"\n",
            dir.path().display()
        );
        let (a, b) = (open_string(&toml).unwrap(), open_string(&toml).unwrap());
        // SAFETY: live until freed at the end.
        let (ca, cb) = unsafe { (&*a, &*b) };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let address = format!("ffi-{}-{nanos}", std::process::id());
        let params = [("management_address", address.as_str())];

        let first = lock(ca, "infinidat", &params, 10_000).unwrap();
        assert_eq!(
            first.name(),
            format!("infinidat-{address}-lock"),
            "{scheme}"
        );
        // SAFETY: live guards.
        let first_token = unsafe { locks_guard_token(first.0) };
        // SAFETY: as above.
        assert_eq!(
            unsafe { locks_guard_state(first.0) },
            locks_lock_state::Held
        );
        let (status, message) = status_of(lock(cb, "infinidat", &params, 0));
        assert_eq!(status, locks_status::WouldBlock, "{scheme}: {message}");
        // A queued waiter cancelled from another thread leaves its queue
        // entry behind on neither server: the next waiter is not stuck behind it.
        let cancel = Cancel::new();
        std::thread::scope(|s| {
            let waiter =
                s.spawn(|| status_of(lock_cancellable(cb, "infinidat", &params, -1, &cancel)));
            std::thread::sleep(Duration::from_millis(300));
            cancel.trigger();
            let (status, message) = waiter.join().unwrap();
            assert_eq!(status, locks_status::Cancelled, "{scheme}: {message}");
        });
        first.release().unwrap();
        let second = lock(cb, "infinidat", &params, 10_000).unwrap();
        // SAFETY: live guard.
        let second_token = unsafe { locks_guard_token(second.0) };
        assert!(
            second_token > first_token,
            "{scheme}: token {second_token} after {first_token}"
        );
        second.release().unwrap();
        drop((first, second));
        // SAFETY: freed once.
        unsafe {
            locks_client_free(a);
            locks_client_free(b);
        }
    }
}

/// A cancellation handle that frees itself; shared by reference between threads.
struct Cancel(*mut locks_cancel);

// SAFETY: the handle is documented as usable from any thread; it is freed
// only on drop, after every thread that used it was joined.
unsafe impl Send for Cancel {}
// SAFETY: as above.
unsafe impl Sync for Cancel {}

impl Cancel {
    fn new() -> Self {
        let mut cancel = null_mut();
        // SAFETY: valid out-pointer; no error is expected.
        let status = unsafe { locks_cancel_new(&mut cancel, null_mut()) };
        assert_eq!(status, locks_status::Ok);
        assert!(!cancel.is_null());
        Cancel(cancel)
    }

    fn trigger(&self) {
        // SAFETY: live handle.
        assert_eq!(
            unsafe { locks_cancel_trigger(self.0, null_mut()) },
            locks_status::Ok
        );
    }

    fn is_triggered(&self) -> bool {
        // SAFETY: live handle.
        unsafe { locks_cancel_is_triggered(self.0) }
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        // SAFETY: freed once.
        unsafe { locks_cancel_free(self.0) };
    }
}

fn lock_name_cancellable(
    client: &locks_client,
    scope: c_int,
    name: &str,
    timeout_ms: i64,
    cancel: Option<&Cancel>,
) -> Result<Guard, (locks_status, String)> {
    let name = cstring(name);
    let mut guard = null_mut();
    let mut err = null_mut();
    // SAFETY: valid arguments.
    let status = unsafe {
        locks_client_lock_name_cancellable(
            client,
            scope,
            name.as_ptr(),
            timeout_ms,
            cancel.map_or(null(), |c| c.0.cast_const()),
            &mut guard,
            &mut err,
        )
    };
    acquired(status, guard, err)
}

fn lock_cancellable(
    client: &locks_client,
    id: &str,
    params: &[(&str, &str)],
    timeout_ms: i64,
    cancel: &Cancel,
) -> Result<Guard, (locks_status, String)> {
    lock_with(client, id, params, timeout_ms, Some(cancel))
}

const LOCKS_SCOPE_PROCESS: c_int = locks_scope::Process as c_int;

/// A waiter blocked in another thread returns CANCELLED soon after the
/// trigger, in both re-entry modes (the acquire on the calling thread, and
/// as a task of its own) and on the memory and lock-file backends; it leaves
/// nothing behind, so the next waiter gets the lock when the holder lets go.
#[test]
fn a_triggered_handle_ends_a_blocked_acquire() {
    for per_thread in [true, false] {
        for scope in [LOCKS_SCOPE_PROCESS, LOCKS_SCOPE_NODE] {
            let what = format!("per_thread {per_thread}, scope {scope}");
            let f = Fixture::new();
            // SAFETY: no other thread uses the client yet.
            let status =
                unsafe { locks_client_set_reentry_check(f.client, per_thread, null_mut()) };
            assert_eq!(status, locks_status::Ok);
            let held = lock_name(f.client(), scope, "busy", 0).unwrap();
            let cancel = Cancel::new();
            assert!(!cancel.is_triggered());
            std::thread::scope(|s| {
                let cancelled = s.spawn(|| {
                    let start = Instant::now();
                    let result =
                        lock_name_cancellable(f.client(), scope, "busy", -1, Some(&cancel));
                    (status_of(result), start.elapsed())
                });
                // A second waiter, behind the first: it must get the lock
                // once the holder lets go, the cancelled waiter notwithstanding.
                let next = s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    lock_name(f.client(), scope, "busy", 10_000)
                });
                std::thread::sleep(Duration::from_millis(300));
                let triggered = Instant::now();
                cancel.trigger();
                cancel.trigger(); // idempotent
                assert!(cancel.is_triggered());
                let ((status, message), waited) = cancelled.join().unwrap();
                assert_eq!(status, locks_status::Cancelled, "{what}: {message}");
                assert!(
                    message.contains("locks_client_lock_name_cancellable")
                        && message.contains("`busy`")
                        && message.contains("cancelled"),
                    "{what}: {message}"
                );
                assert!(waited >= Duration::from_millis(250), "{what}: {waited:?}");
                assert!(
                    triggered.elapsed() < Duration::from_secs(2),
                    "{what}: cancellation took {:?}",
                    triggered.elapsed()
                );
                held.release().unwrap();
                let next = next
                    .join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                next.release().unwrap();
            });
            // Free again: the cancelled waiter holds nothing.
            lock_name(f.client(), scope, "busy", 5_000)
                .unwrap_or_else(|e| panic!("{what}: {e:?}"))
                .release()
                .unwrap();
        }
    }
}

/// A handle triggered before the call: CANCELLED at once, even on a free
/// lock, which stays free; a handle never triggered changes nothing.
#[test]
fn a_pre_triggered_handle_returns_at_once() {
    let f = Fixture::new();
    let cancel = Cancel::new();
    cancel.trigger();
    for scope in [LOCKS_SCOPE_PROCESS, LOCKS_SCOPE_NODE] {
        let start = Instant::now();
        let (status, message) = status_of(lock_name_cancellable(
            f.client(),
            scope,
            "free",
            -1,
            Some(&cancel),
        ));
        assert_eq!(status, locks_status::Cancelled, "{message}");
        assert!(start.elapsed() < Duration::from_millis(500));
        lock_name(f.client(), scope, "free", 0)
            .unwrap()
            .release()
            .unwrap();
    }
    let (status, message) = status_of(lock_cancellable(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        -1,
        &cancel,
    ));
    assert_eq!(status, locks_status::Cancelled, "{message}");
    assert!(
        message.contains("locks_client_lock_cancellable")
            && message.contains("`infinidat-10.0.0.1-lock`"),
        "{message}"
    );
    // Template errors still come first.
    let (status, _) = status_of(lock_cancellable(f.client(), "infinidat", &[], -1, &cancel));
    assert_eq!(status, locks_status::MissingParameter);

    let idle = Cancel::new();
    let g = lock_cancellable(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        -1,
        &idle,
    )
    .unwrap();
    assert_eq!(g.name(), "infinidat-10.0.0.1-lock");
    // The per-thread re-entry check applies to a cancellable acquire...
    let (status, _) = status_of(lock_cancellable(
        f.client(),
        "infinidat",
        &[("management_address", "10.0.0.1")],
        -1,
        &idle,
    ));
    assert_eq!(status, locks_status::WouldDeadlock);
    // ...and so do the timeouts, in another thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            for (timeout_ms, want) in [(0, locks_status::WouldBlock), (100, locks_status::Timeout)]
            {
                let (status, _) = status_of(lock_cancellable(
                    f.client(),
                    "infinidat",
                    &[("management_address", "10.0.0.1")],
                    timeout_ms,
                    &idle,
                ));
                assert_eq!(status, want);
            }
        });
    });
    // NULL: not cancellable.
    let g2 = lock_name_cancellable(f.client(), LOCKS_SCOPE_PROCESS, "plain", 0, None).unwrap();
    g2.release().unwrap();
    g.release().unwrap();
    assert!(!idle.is_triggered());
}

#[test]
fn cancel_handle_null_arguments() {
    let f = Fixture::new();
    let name = cstring("x");
    let mut guard = null_mut();
    // SAFETY: NULL is what is being tested.
    unsafe {
        let mut err = null_mut();
        let (s, m) = take_error(locks_cancel_new(null_mut(), &mut err), err);
        assert_eq!(s, locks_status::NullArgument);
        assert!(m.contains("`cancel_out`"), "{m}");
        let mut err = null_mut();
        let (s, m) = take_error(locks_cancel_trigger(null(), &mut err), err);
        assert_eq!(s, locks_status::NullArgument);
        assert!(m.contains("`cancel`"), "{m}");
        assert!(!locks_cancel_is_triggered(null()));
        locks_cancel_free(null_mut());

        let cancel = Cancel::new();
        let mut err = null_mut();
        let s = locks_client_lock_name_cancellable(
            null(),
            LOCKS_SCOPE_NODE,
            name.as_ptr(),
            0,
            cancel.0,
            &mut guard,
            &mut err,
        );
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::NullArgument);
        assert!(m.contains("`client`"), "{m}");
        let mut err = null_mut();
        let s = locks_client_lock_name_cancellable(
            f.client(),
            LOCKS_SCOPE_NODE,
            name.as_ptr(),
            0,
            cancel.0,
            null_mut(),
            &mut err,
        );
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::NullArgument);
        assert!(m.contains("`guard_out`"), "{m}");
        let mut err = null_mut();
        let s = locks_client_lock_cancellable(
            f.client(),
            null(),
            null(),
            null(),
            0,
            0,
            cancel.0,
            &mut guard,
            &mut err,
        );
        let (s, m) = take_error(s, err);
        assert_eq!(s, locks_status::NullArgument);
        assert!(
            m.contains("locks_client_lock_cancellable") && m.contains("`id`"),
            "{m}"
        );
    }
    assert!(guard.is_null());
}

/// A release refused inside a tokio runtime leaves the lock held, so the
/// guard can still be released from a plain thread.
#[test]
fn a_release_refused_inside_a_runtime_keeps_the_lock() {
    let f = Fixture::new();
    let g = lock_name(f.client(), LOCKS_SCOPE_PROCESS, "in-runtime", 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let refused = runtime.block_on(async { g.release() });
    assert_eq!(refused.unwrap_err().0, locks_status::Unsupported);
    let other = std::thread::scope(|s| {
        s.spawn(|| status_of(lock_name(f.client(), LOCKS_SCOPE_PROCESS, "in-runtime", 0)).0)
            .join()
            .unwrap()
    });
    assert_eq!(other, locks_status::WouldBlock, "still held");
    g.release().expect("released from a plain thread");
}
