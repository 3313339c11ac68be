//! Times the uncontended acquire+release cycle of the file backend against
//! the raw OFD lock+unlock pair on an open descriptor, for profiling:
//! `cargo run --release -p locks-file --example cycle [SECONDS [ours]]`
//! (with `ours`, only the backend's cycle runs: for `perf record`).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use locks_core::{Backend, LockName, LockRequest, Scope};
use locks_file::{FileBackend, FileConfig};

fn ofd(fd: i32, lock: bool) {
    // SAFETY: all-zero is a valid `flock`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as libc::c_short;
    // SAFETY: `fd` is open and `fl` valid for the call.
    let rc = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
    assert_eq!(rc, 0, "fcntl: {}", std::io::Error::last_os_error());
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map_or(3.0, |s| s.parse().expect("SECONDS"));
    let dir = std::env::temp_dir().join(format!("locks-file-cycle-{}", std::process::id()));
    let backend = FileBackend::open(FileConfig::new(&dir)).expect("open");
    let request = LockRequest::new(LockName::new("cycle").expect("name"), Scope::Node);
    let floor_file = std::fs::File::create(dir.join("floor")).expect("floor file");
    let fd = floor_file.as_raw_fd();
    let only_ours = std::env::args().nth(2).as_deref() == Some("ours");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        const BATCH: u32 = 2000;
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        while Instant::now() < end {
            let start = Instant::now();
            for _ in 0..BATCH {
                backend
                    .acquire(&request)
                    .await
                    .expect("acquire")
                    .release()
                    .await
                    .expect("release");
            }
            ours.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
            if only_ours {
                continue;
            }
            let start = Instant::now();
            for _ in 0..BATCH {
                ofd(fd, true);
                ofd(fd, false);
            }
            floor.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        if only_ours {
            println!("backend cycle {:.0} ns", median(&mut ours));
            return;
        }
        let (o, f) = (median(&mut ours), median(&mut floor));
        println!(
            "backend cycle {o:.0} ns, raw OFD pair {f:.0} ns, ratio {:.2}",
            o / f
        );
    });
    drop(std::fs::remove_dir_all(&dir));
}
