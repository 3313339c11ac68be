//! Shared pieces of the driver examples: opening [`Locks`] from
//! `$LOCKS_CONFIG`, a timeline printer, simulated devices that notice two
//! operations inside them at once and say so loudly, a small SAN model (hosts
//! and LUN mappings), and the runner that plays each scenario with the lock
//! and then without it.
//!
//! Every example runs `cargo run --example NAME` on the embedded defaults,
//! and on etcd or ZooKeeper when `LOCKS_CONFIG` names a configuration that
//! points there. `--locked` or `--unlocked` plays one part only.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locks::{Config, ErrorKind, Locks, Scope};

/// Any error a scenario may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable a parent example passes to a copy of itself, so
/// both print times from the same start.
pub const EPOCH_ENV: &str = "LOCKS_EXAMPLE_EPOCH_US";

// ---------------------------------------------------------------------------
// Driver errors

/// The error type of the simulated drivers' methods: what `#[locked]` needs
/// is `From<locks::Error>`.
#[derive(Debug)]
pub enum DriverError {
    /// Taking or releasing the lock failed.
    Lock(locks::Error),
    /// The simulated array or CLI refused the operation.
    Array(String),
}

impl DriverError {
    /// The lock error kind, when the lock failed.
    pub fn lock_kind(&self) -> Option<ErrorKind> {
        match self {
            DriverError::Lock(e) => Some(e.kind()),
            DriverError::Array(_) => None,
        }
    }
}

impl From<locks::Error> for DriverError {
    fn from(e: locks::Error) -> Self {
        DriverError::Lock(e)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Lock(e) => write!(f, "lock error ({}): {e}", e.kind()),
            DriverError::Array(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Lock(e) => Some(e),
            DriverError::Array(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Timeline

fn epoch_us() -> u128 {
    static EPOCH: OnceLock<u128> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        std::env::var(EPOCH_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(unix_us)
    })
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Milliseconds since the example started (the same clock in a child copy).
pub fn now_ms() -> f64 {
    let start = epoch_us();
    unix_us().saturating_sub(start) as f64 / 1000.0
}

/// Prints one timeline line: `[  12.3 ms] who  what`.
pub fn say(who: &str, what: impl fmt::Display) {
    let line = format!("[{:7.1} ms] {who:<12} {what}\n", now_ms());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Sleeps `ms` milliseconds: the time a simulated device takes.
pub async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Sleeps until `at_ms` on the example's clock (a start line for workers in
/// several processes).
pub async fn until(at_ms: f64) {
    let left = at_ms - now_ms();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left / 1000.0)).await;
    }
}

// ---------------------------------------------------------------------------
// Locks

/// The arguments of an example's second process (`NAME --child MODE DIR
/// START_MS`), and the client it opens from `$LOCKS_CONFIG`.
#[derive(Debug)]
pub struct ChildArgs {
    /// With or without the lock.
    pub mode: Mode,
    /// The simulated device's state directory, shared with the first process.
    pub dir: PathBuf,
    /// The first process's start, in milliseconds since the epoch.
    pub start: f64,
    /// The lock client.
    pub locks: Locks,
}

impl ChildArgs {
    /// Parses `MODE DIR START_MS` and opens the client; on failure prints why
    /// (naming the example `name`) and gives the exit status to return.
    pub async fn parse(name: &str, args: &[String]) -> Result<ChildArgs, ExitCode> {
        let [flag, dir, start] = args else {
            eprintln!("usage: {name} --child --locked|--unlocked DIR START_MS");
            return Err(ExitCode::from(2));
        };
        let (Some(mode), Ok(start)) = (Mode::from_flag(flag), start.parse::<f64>()) else {
            eprintln!("{name} --child: bad arguments {args:?}");
            return Err(ExitCode::from(2));
        };
        match open_locks(true).await {
            Ok(locks) => Ok(ChildArgs {
                mode,
                dir: PathBuf::from(dir),
                start,
                locks,
            }),
            Err(e) => {
                eprintln!("{name} --child: {}", e.report());
                Err(ExitCode::from(2))
            }
        }
    }
}

/// Opens [`Locks`] as a driver would: the file named by `$LOCKS_CONFIG`, or
/// the embedded defaults. Prints the backend of each scope, and the
/// configuration's warnings on stderr.
///
/// # Errors
/// Those of [`Config::discover`] and [`Locks::open`].
pub async fn open_locks(quiet: bool) -> Result<Locks, locks::Error> {
    let locks = Locks::open(Config::discover(None)?).await?;
    if !quiet {
        let source = std::env::var(locks::CONFIG_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .map_or_else(
                || "embedded defaults".to_owned(),
                |p| format!("{} = {p}", locks::CONFIG_ENV),
            );
        println!("   locks from {source}:");
        for scope in Scope::ALL {
            println!(
                "     {:7} {}",
                scope.as_str(),
                locks.backend(scope).describe()
            );
        }
        for warning in locks.warnings() {
            eprintln!("{warning}");
        }
    }
    Ok(locks)
}

/// Prints a catalog entry the way the reference document lists it.
pub fn describe_entry(locks: &Locks, id: &str) {
    match locks.catalog().get(id) {
        Ok(e) => {
            println!(
                "   `{id}`: {} | {} scope | name `{}` | {} in {}",
                e.driver,
                e.scope.as_str(),
                e.template,
                e.methods.join(", "),
                e.file
            );
            println!("     critical section: {}", e.critical_section);
        }
        Err(e) => println!("   `{id}`: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Simulated devices

/// One operation a [`Device`] saw, on the example clock.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Who ran it.
    pub who: String,
    /// What it was.
    pub what: String,
    /// When it entered, ms.
    pub start: f64,
    /// When it left, ms.
    pub end: f64,
}

/// A simulated array, target or CLI that must see one operation at a time,
/// as the real one needs: it notices a second operation starting while one
/// is inside and prints `CORRUPTED: ...`. With a marker file
/// ([`Device::shared`]) it notices operations from other processes too.
#[derive(Debug)]
pub struct Device<S> {
    name: String,
    state: Mutex<S>,
    inside: Mutex<Vec<(u64, String)>>,
    next: AtomicU64,
    overlaps: AtomicUsize,
    intervals: Mutex<Vec<Interval>>,
    marker: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S> Device<S> {
    /// A device in this process.
    pub fn new(name: impl Into<String>, state: S) -> Self {
        Device {
            name: name.into(),
            state: Mutex::new(state),
            inside: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            overlaps: AtomicUsize::new(0),
            intervals: Mutex::new(Vec::new()),
            marker: None,
        }
    }

    /// A device shared by processes: an operation inside holds the marker
    /// file `marker` (created exclusively), so an operation of another process
    /// starting meanwhile is noticed.
    pub fn shared(name: impl Into<String>, state: S, marker: impl Into<PathBuf>) -> Self {
        Device {
            marker: Some(marker.into()),
            ..Device::new(name, state)
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts an operation. If another is inside, prints `CORRUPTED: two
    /// writers inside ...` and counts it; the operation goes on, so the damage
    /// shows too.
    pub fn enter(&self, who: &str, what: impl Into<String>) -> Section<'_, S> {
        let what = what.into();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let label = format!("{who} (pid {})", std::process::id());
        let mut other = None;
        let mut owns_marker = false;
        match &self.marker {
            Some(path) => match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let _ = f.write_all(label.as_bytes());
                    owns_marker = true;
                }
                Err(_) => {
                    other = Some(
                        std::fs::read_to_string(path)
                            .unwrap_or_else(|_| "another operation".to_owned()),
                    );
                }
            },
            None => {
                let mut inside = lock(&self.inside);
                if let Some((_, first)) = inside.first() {
                    other = Some(first.clone());
                }
                inside.push((id, label));
            }
        }
        let corrupted = other.is_some();
        if let Some(other) = other {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
            say(
                who,
                format!(
                    "CORRUPTED: two writers inside {}: `{what}` started while {other} was inside",
                    self.name
                ),
            );
        }
        Section {
            device: self,
            id,
            who: who.to_owned(),
            what,
            start: now_ms(),
            owns_marker,
            corrupted,
        }
    }

    /// The device's state (hold it briefly, never across an await).
    pub fn state(&self) -> MutexGuard<'_, S> {
        lock(&self.state)
    }

    /// How many operations started while another was inside.
    pub fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::Relaxed)
    }

    /// The operations seen so far.
    pub fn intervals(&self) -> Vec<Interval> {
        lock(&self.intervals).clone()
    }

    /// Prints how many operations the device saw and whether any two
    /// overlapped; returns the problem, if any.
    pub fn report(&self) -> Option<String> {
        let n = lock(&self.intervals).len();
        let overlaps = self.overlaps();
        if overlaps == 0 {
            println!("   {}: {}, one at a time", self.name, operations(n));
            None
        } else {
            let problem = format!(
                "{}: {overlaps} of {} started while another was inside",
                self.name,
                operations(n)
            );
            println!("   {problem}");
            Some(problem)
        }
    }
}

fn operations(n: usize) -> String {
    if n == 1 {
        "1 operation".to_owned()
    } else {
        format!("{n} operations")
    }
}

/// One operation inside a [`Device`]; it leaves when dropped.
#[derive(Debug)]
pub struct Section<'a, S> {
    device: &'a Device<S>,
    id: u64,
    who: String,
    what: String,
    start: f64,
    owns_marker: bool,
    corrupted: bool,
}

impl<S> Section<'_, S> {
    /// Whether another operation was inside when this one started.
    pub fn corrupted(&self) -> bool {
        self.corrupted
    }

    /// The device's state.
    pub fn state(&self) -> MutexGuard<'_, S> {
        self.device.state()
    }
}

impl<S> Drop for Section<'_, S> {
    fn drop(&mut self) {
        if self.owns_marker
            && let Some(path) = &self.device.marker
        {
            let _ = std::fs::remove_file(path);
        }
        lock(&self.device.inside).retain(|(id, _)| *id != self.id);
        lock(&self.device.intervals).push(Interval {
            who: std::mem::take(&mut self.who),
            what: std::mem::take(&mut self.what),
            start: self.start,
            end: now_ms(),
        });
    }
}

/// How long, in ms, operations of `a` and of `b` were running at the same
/// time: positive when two devices were worked on in parallel.
pub fn busy_together(a: &[Interval], b: &[Interval]) -> f64 {
    let mut total = 0.0;
    for x in a {
        for y in b {
            let overlap = x.end.min(y.end) - x.start.max(y.start);
            if overlap > 0.0 {
                total += overlap;
            }
        }
    }
    total
}

/// Prints whether two devices were busy at the same time (expected: they are
/// guarded by different lock names).
pub fn report_parallel<A, B>(a: &Device<A>, b: &Device<B>) {
    let together = busy_together(&a.intervals(), &b.intervals());
    if together > 0.0 {
        println!(
            "   {} and {} were busy at the same time for {together:.0} ms: different names, no waiting",
            a.name(),
            b.name()
        );
    } else {
        println!(
            "   {} and {} happened not to be busy at the same time in this run",
            a.name(),
            b.name()
        );
    }
}

// ---------------------------------------------------------------------------
// A SAN array: hosts and LUN mappings

/// A host object on a [`San`] array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanHost {
    /// The host name (an initiator's host).
    pub name: String,
    /// LUN to volume.
    pub luns: BTreeMap<u32, String>,
}

/// What a SAN array keeps: host objects and the volumes mapped to each at a
/// LUN. It reports what goes wrong when attach and detach race: a host
/// created twice, one LUN given to two volumes, a mapping on a host that was
/// deleted, a host deleted while it still had volumes.
#[derive(Debug, Default)]
pub struct San {
    /// The array's name, for messages.
    pub name: String,
    /// Host objects, in creation order (a name twice is damage).
    pub hosts: Vec<SanHost>,
    problems: Vec<String>,
}

impl San {
    /// An empty array.
    pub fn new(name: impl Into<String>) -> Self {
        San {
            name: name.into(),
            ..San::default()
        }
    }

    fn damage(&mut self, who: &str, what: String) {
        say(who, format!("CORRUPTED: {}: {what}", self.name));
        self.problems.push(format!("{}: {what}", self.name));
    }

    /// Whether a host of that name exists.
    pub fn has_host(&self, name: &str) -> bool {
        self.hosts.iter().any(|h| h.name == name)
    }

    /// Creates a host object; a second host of the same name is damage.
    pub fn create_host(&mut self, who: &str, name: &str) {
        if self.has_host(name) {
            self.damage(who, format!("host `{name}` created a second time"));
        }
        self.hosts.push(SanHost {
            name: name.to_owned(),
            luns: BTreeMap::new(),
        });
    }

    /// The lowest LUN not used on `host` (from 1).
    pub fn free_lun(&self, host: &str) -> u32 {
        let used: Vec<u32> = self
            .hosts
            .iter()
            .filter(|h| h.name == host)
            .flat_map(|h| h.luns.keys().copied())
            .collect();
        (1..).find(|lun| !used.contains(lun)).unwrap_or(1)
    }

    /// Maps `volume` to `host` at `lun`; a missing host or a LUN already in
    /// use is damage (and the mapping is not made). Returns whether it was made.
    pub fn map(&mut self, who: &str, host: &str, lun: u32, volume: &str) -> bool {
        let Some(pos) = self.hosts.iter().position(|h| h.name == host) else {
            self.damage(
                who,
                format!("`{volume}` mapped to host `{host}`, which was deleted meanwhile"),
            );
            return false;
        };
        if let Some(other) = self.hosts[pos].luns.get(&lun).cloned() {
            self.damage(
                who,
                format!("LUN {lun} of host `{host}` given to `{volume}` while `{other}` has it"),
            );
            return false;
        }
        self.hosts[pos].luns.insert(lun, volume.to_owned());
        true
    }

    /// Unmaps `volume` from `host`; returns how many volumes the host still has.
    pub fn unmap(&mut self, host: &str, volume: &str) -> usize {
        match self.hosts.iter_mut().find(|h| h.name == host) {
            Some(h) => {
                h.luns.retain(|_, v| v != volume);
                h.luns.len()
            }
            None => 0,
        }
    }

    /// How many volumes `host` has.
    pub fn mapped(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.name == host)
            .map(|h| h.luns.len())
            .sum()
    }

    /// Deletes a host; one that still has volumes is damage.
    pub fn delete_host(&mut self, who: &str, host: &str) {
        if let Some(pos) = self.hosts.iter().position(|h| h.name == host) {
            let luns = self.hosts[pos].luns.len();
            if luns > 0 {
                self.damage(
                    who,
                    format!("host `{host}` deleted while {luns} volume(s) were mapped to it"),
                );
            }
            self.hosts.remove(pos);
        }
    }

    /// Everything that went wrong so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.clone()
    }

    /// One line per host: `h1: 1=vol-1 2=vol-2`.
    pub fn summary(&self) -> String {
        if self.hosts.is_empty() {
            return "no hosts".to_owned();
        }
        self.hosts
            .iter()
            .map(|h| {
                let luns: Vec<String> = h.luns.iter().map(|(l, v)| format!("{l}={v}")).collect();
                format!("{} [{}]", h.name, luns.join(" "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Attaches `volume` to `host` as SAN drivers do: finds or creates the host
/// object, picks the lowest free LUN, maps the volume there. Returns the LUN,
/// or `None` when the array refused the mapping (see [`San::map`]).
pub async fn attach(array: &Device<San>, who: &str, host: &str, volume: &str) -> Option<u32> {
    let inside = array.enter(who, format!("attach {volume} to {host}"));
    // GET /hosts?name=HOST
    pause(8).await;
    let exists = inside.state().has_host(host);
    if !exists {
        // POST /hosts
        pause(8).await;
        inside.state().create_host(who, host);
    }
    // GET /hosts/HOST/luns
    pause(8).await;
    let lun = inside.state().free_lun(host);
    // POST /hosts/HOST/luns
    pause(8).await;
    if !inside.state().map(who, host, lun, volume) {
        return None;
    }
    say(
        who,
        format!("{volume} is LUN {lun} of {host} on {}", array.name()),
    );
    Some(lun)
}

/// Detaches `volume` from `host`, and deletes the host object when no volume
/// is left on it.
pub async fn detach(array: &Device<San>, who: &str, host: &str, volume: &str) {
    let inside = array.enter(who, format!("detach {volume} from {host}"));
    // DELETE /hosts/HOST/luns/VOLUME
    pause(8).await;
    let left = inside.state().unmap(host, volume);
    if left == 0 {
        // DELETE /hosts/HOST
        pause(8).await;
        inside.state().delete_host(who, host);
        say(
            who,
            format!("{volume} detached; {host} had no volume left and was deleted"),
        );
    } else {
        say(who, format!("{volume} detached from {host}"));
    }
}

// ---------------------------------------------------------------------------
// Runner

/// With the lock or without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The driver takes its lock, as in Cinder.
    Locked,
    /// The same calls with the lock left out, to show what it prevents.
    Unlocked,
}

impl Mode {
    /// Whether the lock is taken.
    pub fn locked(self) -> bool {
        self == Mode::Locked
    }

    /// The command-line flag for this mode (`--locked`, `--unlocked`).
    pub fn flag(self) -> &'static str {
        match self {
            Mode::Locked => "--locked",
            Mode::Unlocked => "--unlocked",
        }
    }

    /// The mode a flag names.
    pub fn from_flag(flag: &str) -> Option<Mode> {
        match flag {
            "--locked" => Some(Mode::Locked),
            "--unlocked" => Some(Mode::Unlocked),
            _ => None,
        }
    }
}

/// The arguments after `--child`, when this process is a copy started by
/// [`child_command`].
pub fn child_args() -> Option<Vec<String>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--child") => Some(args.collect()),
        _ => None,
    }
}

/// A command starting a copy of this example with `--child ARGS...`, on the
/// same clock and with the same `$LOCKS_CONFIG`.
///
/// # Errors
/// When the path of this executable cannot be found.
pub fn child_command(args: &[&str]) -> std::io::Result<std::process::Command> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("--child").args(args);
    command.env(EPOCH_ENV, epoch_us().to_string());
    Ok(command)
}

/// Plays `scenario` with the lock, then without it (or only the part that
/// `--locked` / `--unlocked` names), after printing the catalog entries `ids`.
///
/// A scenario returns the problems it found (empty when everything was
/// consistent). The exit status is success when the locked part found none.
pub async fn run<F, Fut>(title: &str, ids: &[&str], scenario: F) -> ExitCode
where
    F: Fn(Locks, Mode) -> Fut,
    Fut: Future<Output = Result<Vec<String>, BoxError>>,
{
    let modes: Vec<Mode> = match std::env::args().nth(1).as_deref() {
        None => vec![Mode::Locked, Mode::Unlocked],
        Some(flag) => match Mode::from_flag(flag) {
            Some(mode) => vec![mode],
            None => {
                eprintln!("usage: {title} [--locked | --unlocked]");
                return ExitCode::from(2);
            }
        },
    };
    println!("== {title}");
    let locks = match open_locks(false).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("cannot open the locks: {}", e.report());
            return ExitCode::from(2);
        }
    };
    for id in ids {
        describe_entry(&locks, id);
    }
    let mut locked_clean = true;
    for mode in modes {
        println!();
        match mode {
            Mode::Locked => println!("-- with the lock"),
            Mode::Unlocked => println!("-- without the lock (what the lock prevents)"),
        }
        let problems = match scenario(locks.clone(), mode).await {
            Ok(problems) => problems,
            Err(e) => {
                println!("   error: {e}");
                vec![format!("the scenario failed: {e}")]
            }
        };
        match (mode, problems.is_empty()) {
            (Mode::Locked, true) => println!("   locked part: clean"),
            (Mode::Locked, false) => {
                locked_clean = false;
                println!("   locked part: FAILED");
                for p in &problems {
                    println!("     - {p}");
                }
            }
            (Mode::Unlocked, false) => {
                println!(
                    "   unlocked part: the simulated device caught {} problem(s):",
                    problems.len()
                );
                for p in &problems {
                    println!("     - {p}");
                }
            }
            (Mode::Unlocked, true) => {
                println!("   unlocked part: no overlap this time (it depends on timing)")
            }
        }
    }
    println!();
    if locked_clean {
        println!("OK: {title}");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: {title}: two operations ran inside one device under the lock");
        ExitCode::FAILURE
    }
}
