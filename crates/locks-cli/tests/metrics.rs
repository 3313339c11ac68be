//! `locks run --metrics-addr`: the client's metrics served for Prometheus
//! while the command runs, read over HTTP as a scraper would.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Running, locks, output};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET /metrics` on 127.0.0.1:`port`, retried until it answers (bounded).
fn scrape(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match attempt {
            Ok(body) if body.contains("locks_held") => return body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("no metrics on port {port}: {other:?}"),
        }
    }
}

#[test]
fn metrics_are_served_while_the_command_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!(
            "[backends]\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
            dir.path().join("locks").display()
        ),
    )
    .expect("write config");
    let port = free_port();
    let holder = Running::start({
        let mut c = locks(&config);
        c.args(["run", "--metrics-addr", &format!("127.0.0.1:{port}"), "lio"])
            .args(["--", "sh", "-c", "echo ACQUIRED; sleep 30"]);
        c
    });
    holder.expect_line("ACQUIRED");
    let body = scrape(port);
    let line = |name: &str, outcome: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("id=\"lio\"") && l.contains(outcome))
            .unwrap_or_else(|| panic!("no {name} for lio in:\n{body}"))
            .to_owned()
    };
    let acquired = line("locks_acquires_total", "outcome=\"acquired\"");
    for label in ["scope=\"node\"", "backend=\"file\"", "outcome=\"acquired\""] {
        assert!(acquired.contains(label), "{acquired}");
    }
    assert!(acquired.ends_with(" 1"), "{acquired}");
    assert!(line("locks_held", "").ends_with(" 1"), "{body}");
    assert!(
        !body.contains("lioadm"),
        "the rendered name is not a label: {body}"
    );
    drop(holder);
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("locks.toml");
    std::fs::write(
        &config,
        format!("[backends]\nnode = \"file://{}\"\n", dir.path().display()),
    )
    .expect("write config");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, stderr) =
        output(locks(&config).args(["run", "--metrics-addr", &addr, "lio", "--", "true"]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&addr) && stderr.contains("--metrics-addr"),
        "{stderr}"
    );
}
