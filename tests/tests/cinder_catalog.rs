//! The built-in catalog against the real Cinder (`cinder==29.0.0` from PyPI,
//! installed by `ci/python.sh`): for every entry whose driver Cinder still
//! has, Cinder's own decorated driver methods run in `tests/python/cinder_peer.py`
//! and take their locks through Cinder's own machinery
//! (`cinder.coordination.COORDINATOR` started on the tooz URL under test,
//! `cinder.utils.synchronized` with oslo's lock path); only the array calls
//! inside them are stand-ins that report "entered" and block until let go.
//! The Rust side takes the same entry by id from the catalog, with the same
//! parameter values, through a `compat = "openstack"` client with prefix
//! `cinder-`.
//!
//! Each entry runs on the mechanism Cinder fixes for it: a
//! `coordination.synchronized` lock (Global) on tooz `file://`,
//! `etcd3+http://` and `zookeeper://`; a `utils.synchronized(external=True)`
//! lock (Node) on oslo lock files; an in-process `utils.synchronized` lock
//! (Process) is only compared by name. For each driver method:
//!
//! - Cinder renders the name we render (what it asked the COORDINATOR or
//!   lockutils for), and the lock kind Cinder uses is the entry's scope;
//! - Cinder holding (inside the method) makes our try-once fail, and the lock
//!   file, etcd key or znode is the one we compute (asserted on disk and on
//!   the server);
//! - our holding makes Cinder's call wait; it enters once we release;
//! - awkward parameter values (IPv6, dots, colons, slashes, braces, percent
//!   signs, spaces, non-ASCII) render identically. Non-ASCII: Cinder's oslo
//!   external locks take it, on the file we take; its tooz coordination locks
//!   raise `UnicodeEncodeError` before anything is locked, while we take the
//!   lock (it cannot collide with one Cinder holds, docs/openstack.md).
//!
//! `every_catalog_entry_maps_to_cinder` fails for a catalog entry the table
//! below does not map, so a new entry needs its Cinder method here.
//!
//! One import is stubbed: `nvmet` (nvmetcli, not on PyPI), see the peer.
//! Needs `LOCKS_TEST_PYTHON` and `LOCKS_TEST_CINDER_SRC` (from
//! `ci/python.sh`), `LOCKS_TEST_ETCD` and `LOCKS_TEST_ZK`; each test is
//! skipped without its variables unless `CI=true`, where it fails.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use locks::{CatalogEntry, Config, ErrorKind, LockGuard, Locks, Params, Scope, Wait};
use locks_core::testing::server_from_env;
use locks_tests::{python_from_env, python_script};
use tempfile::TempDir;

/// The Cinder release `ci/python.sh` installs and these tests were written against.
const CINDER_VERSION: &str = "29.0.0";

/// How long Cinder's call must stay out while we hold its lock. A lock that
/// did not exclude it would let it in within milliseconds (every Python
/// mechanism's first attempt is immediate).
const BLOCKED_FOR: Duration = Duration::from_millis(700);
/// How long anything may take: building a driver, a handover (etcd3gw
/// polls once a second, fasteners backs off to 0.1 s).
const PATIENCE: Duration = Duration::from_secs(20);

/// How Cinder gets one catalog parameter.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A name the peer sets (`configuration.X`, an attribute, `arg:X`).
    Cinder(&'static str),
    /// The driver class itself: STX's `driver_name` is the client's class name.
    ClassName,
}

/// Where Cinder 29 takes one catalog entry's lock.
#[derive(Debug)]
enum Mapping {
    /// Driven: the classes (`module:Class`; one per value of a `ClassName`
    /// parameter), their decorated methods, and each template parameter's source.
    Driver {
        classes: &'static [&'static str],
        methods: &'static [&'static str],
        params: &'static [(&'static str, Source)],
    },
    /// The entry's file is gone from Cinder 29 (asserted).
    Removed,
}

const STX_CLASSES: &[&str] = &[
    "cinder.volume.drivers.stx.client:STXClient",
    "cinder.volume.drivers.san.hp.hpmsa_client:HPMSAClient",
    "cinder.volume.drivers.lenovo.lenovo_client:LenovoClient",
    "cinder.volume.drivers.dell_emc.powervault.client:PVMEClient",
];
const STX_PARAMS: &[(&str, Source)] = &[
    ("driver_name", Source::ClassName),
    ("array_name", Source::Cinder("_array_name")),
];
const UNITY_ADAPTER: &[&str] = &["cinder.volume.drivers.dell_emc.unity.adapter:CommonAdapter"];
const UNITY_ADAPTER_PARAMS: &[(&str, Source)] = &[
    ("client.host", Source::Cinder("client.host")),
    ("host_name", Source::Cinder("arg:host_name")),
];
const SAN_IP: &[(&str, Source)] = &[("san_ip", Source::Cinder("configuration.san_ip"))];

/// Catalog entry id → where Cinder 29 takes it.
fn mapping(id: &str) -> Option<Mapping> {
    Some(match id {
        "lio" => Mapping::Driver {
            classes: &["cinder.volume.targets.lio:LioAdm"],
            methods: &["_execute"],
            params: &[],
        },
        "nvmet" => Mapping::Driver {
            classes: &["cinder.volume.targets.nvmet:NVMET"],
            methods: &["_map_volume", "_locked_unmap_volume"],
            params: &[],
        },
        "solidfire" => Mapping::Driver {
            classes: &["cinder.volume.drivers.solidfire:SolidFireDriver"],
            // Both decorated with locked_source_id_operation.
            methods: &["create_cloned_volume", "create_volume_from_snapshot"],
            params: &[("resource_id", Source::Cinder("arg:source.id"))],
        },
        "infinidat" => Mapping::Driver {
            classes: &["cinder.volume.drivers.infinidat:InfiniboxVolumeDriver"],
            methods: &["_initialize_connection", "_terminate_connection"],
            // do_setup: self.management_address = self.configuration.san_ip
            params: &[("management_address", Source::Cinder("configuration.san_ip"))],
        },
        "kaminario-fc" => Mapping::Driver {
            classes: &["cinder.volume.drivers.kaminario.kaminario_fc:KaminarioFCDriver"],
            methods: &["initialize_connection", "terminate_connection"],
            params: SAN_IP,
        },
        "kaminario-iscsi" => Mapping::Driver {
            classes: &["cinder.volume.drivers.kaminario.kaminario_iscsi:KaminarioISCSIDriver"],
            methods: &["initialize_connection", "terminate_connection"],
            params: SAN_IP,
        },
        "unity-create-host" => Mapping::Driver {
            classes: &["cinder.volume.drivers.dell_emc.unity.client:UnityClient"],
            methods: &["create_host"],
            params: &[
                ("self.host", Source::Cinder("host")),
                ("name", Source::Cinder("arg:name")),
            ],
        },
        "unity-create-host-and-attach" => Mapping::Driver {
            classes: UNITY_ADAPTER,
            methods: &["_create_host_and_attach"],
            params: UNITY_ADAPTER_PARAMS,
        },
        "unity-attach-detach" => Mapping::Driver {
            classes: UNITY_ADAPTER,
            methods: &["_create_host_and_attach", "_detach_and_delete_host"],
            params: UNITY_ADAPTER_PARAMS,
        },
        "stx-api" => Mapping::Driver {
            classes: STX_CLASSES,
            methods: &["_get_session_key", "_api_request"],
            params: STX_PARAMS,
        },
        "stx-map" => Mapping::Driver {
            classes: STX_CLASSES,
            methods: &["map_volume"],
            params: STX_PARAMS,
        },
        "hgst" | "dothill-api" | "dothill-map" => Mapping::Removed,
        _ => return None,
    })
}

/// Parameter values that must render the same on both sides. The non-ASCII
/// one is refused by tooz coordination locks (see the module docs).
const AWKWARD: &[&str] = &[
    "fd00::1",
    "[fd00::1]:8443",
    "fe80::1%eth0",
    "array-1.example.com",
    "10.0.0.1:8080",
    "a/b/c",
    "{x}-{0}-{}",
    "%(name)s-100%",
    "my array",
    "Zürich-阵列",
];

fn cinder_src_from_env() -> Option<PathBuf> {
    server_from_env("LOCKS_TEST_CINDER_SRC").map(PathBuf::from)
}

/// `module:Class` → the module's file below the Cinder source dir.
fn module_file(src: &Path, class: &str) -> PathBuf {
    let module = class.split(':').next().expect("module:Class");
    src.join(format!("{}.py", module.replace('.', "/")))
}

/// The mapping table covers the catalog exactly, removed entries are really
/// gone from Cinder 29 and driven ones are there, and every template
/// parameter has a source.
#[test]
fn every_catalog_entry_maps_to_cinder() {
    let catalog = locks::Catalog::cinder();
    let src = cinder_src_from_env();
    if let Some(src) = &src {
        let version = std::fs::read_dir(src)
            .expect("list LOCKS_TEST_CINDER_SRC")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("cinder-") && n.ends_with(".dist-info"));
        assert_eq!(
            version.as_deref(),
            Some(format!("cinder-{CINDER_VERSION}.dist-info").as_str()),
            "{} holds another Cinder than the one checked",
            src.display()
        );
    }
    let mut problems = Vec::new();
    for entry in catalog.entries() {
        match mapping(&entry.id) {
            None => problems.push(format!(
                "catalog entry `{}` ({}) has no Cinder mapping: add its Cinder class and \
                 decorated methods to `mapping` in {}",
                entry.id,
                entry.file,
                file!()
            )),
            Some(Mapping::Removed) => {
                if entry.removed_upstream.is_none() {
                    problems.push(format!(
                        "`{}` is gone from Cinder {CINDER_VERSION}, but the catalog does not mark it \
                         removed_upstream",
                        entry.id
                    ));
                }
                if let Some(src) = src.as_ref().filter(|s| s.join(&entry.file).exists()) {
                    problems.push(format!(
                        "`{}` is mapped as removed, but Cinder {CINDER_VERSION} has {}",
                        entry.id,
                        src.join(&entry.file).display()
                    ));
                }
            }
            Some(Mapping::Driver {
                classes, params, ..
            }) => {
                if let Some(version) = &entry.removed_upstream {
                    problems.push(format!(
                        "`{}` is marked removed_upstream = {version:?}, but Cinder {CINDER_VERSION} \
                         has its driver",
                        entry.id
                    ));
                }
                let want: BTreeSet<&str> = entry.template.parameters().collect();
                let have: BTreeSet<&str> = params.iter().map(|(p, _)| *p).collect();
                if want != have {
                    problems.push(format!(
                        "`{}`: the template {} takes {want:?}, the mapping gives {have:?}",
                        entry.id,
                        entry.template.as_str()
                    ));
                }
                if let Some(src) = &src {
                    if !src.join(&entry.file).is_file() {
                        problems.push(format!(
                            "`{}`: {} is not in Cinder {CINDER_VERSION}",
                            entry.id, entry.file
                        ));
                    }
                    for class in classes {
                        if !module_file(src, class).is_file() {
                            problems.push(format!("`{}`: no module for {class}", entry.id));
                        }
                    }
                }
            }
        }
    }
    for id in [
        "lio",
        "nvmet",
        "solidfire",
        "infinidat",
        "kaminario-fc",
        "kaminario-iscsi",
        "unity-create-host",
        "unity-create-host-and-attach",
        "unity-attach-detach",
        "stx-api",
        "stx-map",
        "hgst",
        "dothill-api",
        "dothill-map",
    ] {
        if catalog.get(id).is_err() {
            problems.push(format!(
                "the mapping names `{id}`, which the catalog does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A running `tests/python/cinder_peer.py`.
struct CinderPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pending: VecDeque<String>,
    what: String,
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the peer"))
        .collect();
    String::from_utf8(bytes).expect("UTF-8 from the peer")
}

/// One lock Cinder asked for while inside a method.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Taken {
    /// The COORDINATOR's lock name, prefix included.
    Coordination(String),
    /// An oslo lockutils lock (name without prefix), external or not.
    Oslo { name: String, external: bool },
}

/// How a Cinder call ended.
#[derive(Debug, PartialEq, Eq)]
enum Done {
    Ok,
    Entered(String),
    Refused(String),
}

impl CinderPeer {
    fn start(python: &Path, args: [&str; 2]) -> CinderPeer {
        let what = format!("cinder_peer.py {}", args.join(" "));
        let mut child = Command::new(python)
            .arg(python_script("cinder_peer.py"))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {what}: {e}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = CinderPeer {
            child,
            stdin,
            lines,
            pending: VecDeque::new(),
            what,
        };
        // Importing Cinder and starting the coordinator take a few seconds.
        let ready = peer.next(|l| l == "READY", Duration::from_secs(120));
        assert!(ready.is_some(), "{}: not ready within 120 s", peer.what);
        peer
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: sending `{command}`: {e}", self.what));
    }

    /// The first line (buffered or new, within `timeout`) that `want` accepts;
    /// other lines stay buffered. An `ERROR` line fails the test.
    fn next(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        if let Some(i) = self.pending.iter().position(|l| want(l)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("ERROR") => panic!("{}: {line}", self.what),
                Ok(line) if want(&line) => return Some(line),
                Ok(line) => self.pending.push_back(line),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!("{} exited ({status:?})", self.what)
                }
            }
        }
    }

    /// Starts Cinder's `target` with `values` (Cinder-side name → value).
    fn call(&mut self, tag: &str, target: &str, values: &[(&str, String)]) {
        let mut line = format!("call {tag} {target}");
        for (name, value) in values {
            line.push_str(&format!(" {name}={}", hex(value)));
        }
        self.send(&line);
    }

    /// `ENTERED` of `tag` within `timeout`: the locks Cinder holds.
    fn entered(&mut self, tag: &str, timeout: Duration) -> Option<Vec<Taken>> {
        let prefix = format!("ENTERED {tag} ");
        let done = format!("DONE {tag} ");
        let line = self.next(|l| l.starts_with(&prefix) || l.starts_with(&done), timeout)?;
        let Some(items) = line.strip_prefix(&prefix) else {
            panic!("{tag}: Cinder's call ended without entering: {line}")
        };
        Some(
            items
                .split(',')
                .map(|item| {
                    let (kind, name) = item.split_once(':').expect("KIND:HEX");
                    let name = unhex(name);
                    match kind {
                        "coordination" => Taken::Coordination(name),
                        "external" => Taken::Oslo {
                            name,
                            external: true,
                        },
                        "internal" => Taken::Oslo {
                            name,
                            external: false,
                        },
                        _ => panic!("unknown lock kind in `{line}`"),
                    }
                })
                .collect(),
        )
    }

    fn done(&mut self, tag: &str) -> Done {
        let prefix = format!("DONE {tag} ");
        let line = self
            .next(|l| l.starts_with(&prefix), PATIENCE)
            .unwrap_or_else(|| panic!("{}: no DONE {tag} within {PATIENCE:?}", self.what));
        let rest = &line[prefix.len()..];
        match rest.split_once(' ') {
            None if rest == "ok" => Done::Ok,
            Some(("entered", e)) => Done::Entered(e.to_owned()),
            Some(("refused", e)) => Done::Refused(e.to_owned()),
            _ => panic!("malformed `{line}`"),
        }
    }

    /// Lets `tag`'s array call return and expects the call to end cleanly.
    fn finish(&mut self, tag: &str) {
        self.send(&format!("let {tag}"));
        assert_eq!(self.done(tag), Done::Ok, "{tag}: Cinder's method ends");
    }

    fn etcd_present(&mut self, key: &str) -> bool {
        self.send(&format!("etcd-get {}", hex(key)));
        let line = self
            .next(|l| l.starts_with("ETCD "), PATIENCE)
            .expect("ETCD answer");
        line == "ETCD present"
    }

    fn zk_children(&mut self, path: &str) -> Option<Vec<String>> {
        self.send(&format!("zk-children {}", hex(path)));
        let line = self
            .next(|l| l == "ZK" || l.starts_with("ZK "), PATIENCE)
            .expect("ZK answer");
        match line.strip_prefix("ZK").map(str::trim) {
            Some("none") => None,
            Some("") => Some(Vec::new()),
            Some(list) => Some(list.split(',').map(str::to_owned).collect()),
            None => unreachable!(),
        }
    }

    fn quit(mut self) {
        self.send("quit");
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for python");
        assert!(status.success(), "{} exited with {status}", self.what);
    }
}

impl Drop for CinderPeer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Oslo,
    ToozFile,
    ToozEtcd,
    ToozZookeeper,
}

/// Both sides of one mechanism.
struct Bench {
    mechanism: Mechanism,
    dir: TempDir,
    locks: Locks,
    peer: CinderPeer,
    /// Makes tags, and values unique per run (etcd and ZooKeeper outlive a run).
    counter: usize,
    run: String,
    /// What was checked, for the summary line.
    cases: usize,
}

impl Bench {
    async fn new(mechanism: Mechanism) -> Option<Bench> {
        let python = python_from_env()?;
        cinder_src_from_env()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let oslo_dir = dir.path().join("oslo");
        let tooz_dir = dir.path().join("tooz");
        std::fs::create_dir_all(&oslo_dir).expect("mkdir oslo");
        let file_url = format!("file://{}", tooz_dir.display());
        let global = match mechanism {
            Mechanism::Oslo | Mechanism::ToozFile => file_url,
            Mechanism::ToozEtcd => format!("etcd3+http://{}", server_from_env("LOCKS_TEST_ETCD")?),
            Mechanism::ToozZookeeper => {
                format!("zookeeper://{}", server_from_env("LOCKS_TEST_ZK")?)
            }
        };
        let text = format!(
            "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"{}\"\n[backends]\nglobal = \"{global}\"\n",
            oslo_dir.display()
        );
        let config = Config::from_toml_str(&text, dir.path(), "cinder catalog test")
            .unwrap_or_else(|e| panic!("config:\n{text}\n{}", e.report()));
        let locks = Locks::open(config)
            .await
            .unwrap_or_else(|e| panic!("open:\n{text}\n{}", e.report()));
        let oslo_arg = oslo_dir.display().to_string();
        let args = match mechanism {
            Mechanism::Oslo => ["oslo", oslo_arg.as_str()],
            _ => ["tooz", global.as_str()],
        };
        let peer = CinderPeer::start(&python, args);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Some(Bench {
            mechanism,
            dir,
            locks,
            peer,
            counter: 0,
            run: format!("r{:x}{nanos:x}", std::process::id()),
            cases: 0,
        })
    }

    fn tag(&mut self) -> String {
        self.counter += 1;
        format!("t{}", self.counter)
    }

    /// Which scopes this mechanism's peer can take for Cinder.
    fn serves(&self, scope: Scope) -> bool {
        match self.mechanism {
            Mechanism::Oslo => scope != Scope::Global,
            _ => scope == Scope::Global,
        }
    }

    /// Where the lock named `full` (prefix included) lives, checked while it
    /// is held (by either side): the file exists, the key exists, the znode
    /// has exactly one contender.
    fn assert_lock_is_there(&mut self, full: &str, who: &str) {
        match self.mechanism {
            Mechanism::Oslo => {
                let file = self.dir.path().join("oslo").join(full.replace('/', "_"));
                assert!(
                    file.is_file(),
                    "{who}: oslo lock file {} exists",
                    file.display()
                );
            }
            Mechanism::ToozFile => {
                let file = self.dir.path().join("tooz").join(full);
                assert!(
                    file.is_file(),
                    "{who}: tooz lock file {} exists",
                    file.display()
                );
            }
            Mechanism::ToozEtcd => {
                let key = format!("/tooz/locks{full}");
                assert!(
                    self.peer.etcd_present(&key),
                    "{who}: etcd key `{key}` exists"
                );
            }
            Mechanism::ToozZookeeper => {
                let path = format!("/tooz/locks/{full}");
                let children = self.peer.zk_children(&path).unwrap_or_default();
                assert_eq!(
                    children.len(),
                    1,
                    "{who}: one contender under `{path}`: {children:?}"
                );
                let child = &children[0];
                let ok = child.len() == 32 + 8 + 10
                    && child[..32].bytes().all(|b| b.is_ascii_hexdigit())
                    && &child[32..40] == "__lock__"
                    && child[40..].bytes().all(|b| b.is_ascii_digit());
                assert!(
                    ok,
                    "{who}: kazoo's node name <32 hex>__lock__<10 digits>, got `{child}`"
                );
            }
        }
    }

    /// Nothing was locked for `full` (Cinder refused the name).
    fn assert_nothing_for(&mut self, full: &str) {
        match self.mechanism {
            Mechanism::Oslo => {}
            Mechanism::ToozFile => {
                let file = self.dir.path().join("tooz").join(full);
                assert!(
                    !file.exists(),
                    "no file {} for a refused name",
                    file.display()
                );
            }
            Mechanism::ToozEtcd => {
                let key = format!("/tooz/locks{full}");
                assert!(!self.peer.etcd_present(&key), "no etcd key `{key}`");
            }
            Mechanism::ToozZookeeper => {
                let path = format!("/tooz/locks/{full}");
                assert_eq!(self.peer.zk_children(&path), None, "no znode `{path}`");
            }
        }
    }

    async fn try_once(&self, entry: &CatalogEntry, params: &Params) -> locks::Result<LockGuard> {
        self.locks.lock_with(&entry.id, params, Wait::TryOnce).await
    }

    /// One Cinder method with one set of values: Cinder's name is ours, its
    /// lock kind is the entry's scope, Cinder holding excludes us on the same
    /// file/key/node; with `both_ways`, we holding also keeps Cinder out
    /// until we release.
    async fn case(
        &mut self,
        entry: &CatalogEntry,
        target: &str,
        params: &Params,
        values: &[(&str, String)],
        both_ways: bool,
    ) {
        let what = format!("{:?} `{}` {target} {values:?}", self.mechanism, entry.id);
        let request = self
            .locks
            .request(&entry.id, params)
            .unwrap_or_else(|e| panic!("{what}: our request: {}", e.report()));
        let ours = request.name.as_str().to_owned();
        let plain = entry
            .render(params)
            .unwrap_or_else(|e| panic!("{what}: render: {e}"))
            .as_str()
            .to_owned();
        assert_eq!(ours, format!("cinder-{plain}"), "{what}: prefix");

        let tag = self.tag();
        self.peer.call(&tag, target, values);
        let taken = self
            .peer
            .entered(&tag, PATIENCE)
            .unwrap_or_else(|| panic!("{what}: Cinder did not enter within {PATIENCE:?}"));
        let want = match entry.scope {
            Scope::Global => Taken::Coordination(ours.clone()),
            Scope::Node => Taken::Oslo {
                name: plain.clone(),
                external: true,
            },
            Scope::Process => Taken::Oslo {
                name: plain.clone(),
                external: false,
            },
        };
        assert_eq!(
            taken,
            [want],
            "{what}: the lock Cinder takes (scope {})",
            entry.scope
        );
        self.cases += 1;

        if entry.scope == Scope::Process {
            // In-process on both sides: nothing is shared, no file is made.
            let files = std::fs::read_dir(self.dir.path().join("oslo"))
                .expect("list lock path")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&plain.replace('/', "_")))
                .collect::<Vec<_>>();
            assert!(
                files.is_empty(),
                "{what}: a Process lock makes no lock file: {files:?}"
            );
            self.peer.finish(&tag);
            return;
        }

        // Cinder holds: we are out, on the very file/key/node we compute.
        self.assert_lock_is_there(&ours, &format!("{what}, Cinder holding"));
        let err = self
            .try_once(entry, params)
            .await
            .expect_err("Cinder holds the lock: our try-once must fail");
        assert_eq!(
            err.kind(),
            ErrorKind::WouldBlock,
            "{what}: {}",
            err.report()
        );
        self.peer.finish(&tag);

        // Free again: ours.
        let guard = self
            .try_once(entry, params)
            .await
            .unwrap_or_else(|e| panic!("{what}: after Cinder's release: {}", e.report()));
        self.assert_lock_is_there(&ours, &format!("{what}, we holding"));
        if both_ways {
            let tag = self.tag();
            self.peer.call(&tag, target, values);
            if let Some(taken) = self.peer.entered(&tag, BLOCKED_FOR) {
                panic!("{what}: Cinder entered ({taken:?}) while we hold `{ours}`");
            }
            let released = Instant::now();
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("{what}: release: {}", e.report()));
            self.peer.entered(&tag, PATIENCE).unwrap_or_else(|| {
                panic!("{what}: Cinder still out {PATIENCE:?} after our release")
            });
            let took = released.elapsed();
            self.peer.finish(&tag);
            eprintln!("{what}: Cinder in {took:?} after our release");
        } else {
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("{what}: release: {}", e.report()));
        }
    }

    /// Every catalog entry this mechanism serves, every method both ways, and
    /// the awkward values one way.
    async fn run_catalog(&mut self) {
        let entries: Vec<CatalogEntry> = self.locks.catalog().entries().to_vec();
        for (k, entry) in entries.iter().enumerate() {
            let Some(mapping) = mapping(&entry.id) else {
                panic!(
                    "catalog entry `{}` has no Cinder mapping (see every_catalog_entry_maps_to_cinder)",
                    entry.id
                )
            };
            let Mapping::Driver {
                classes,
                methods,
                params,
            } = mapping
            else {
                continue;
            };
            if !self.serves(entry.scope) {
                continue;
            }
            for (i, class) in classes.iter().enumerate() {
                let class_name = class.rsplit(':').next().expect("Class");
                // Every class, every method, both ways, with a plain value
                // (unique per run); the awkward values one way, on the first
                // class and method.
                // Values differ between entries: two entries may share a
                // template (Kaminario FC and iSCSI), and a name refused by
                // Cinder must find nothing of an earlier case.
                let plain = format!("192.0.2.1-{}{k}", self.run);
                let mut sets = vec![(plain, true)];
                if i == 0 {
                    sets.extend(
                        AWKWARD
                            .iter()
                            .map(|v| (format!("{v}-{}{k}", self.run), false)),
                    );
                }
                for (value, both_ways) in sets {
                    let (ours, theirs) = values_for(params, class_name, &value);
                    let methods: &[&str] = if both_ways { methods } else { &methods[..1] };
                    for method in methods {
                        let target = format!("{class}.{method}");
                        if !value.is_ascii() && entry.scope == Scope::Global {
                            self.non_ascii_global(entry, &target, &ours, &theirs).await;
                        } else {
                            self.case(entry, &target, &ours, &theirs, both_ways).await;
                        }
                    }
                }
            }
        }
    }

    /// tooz coordination locks take ASCII names only: Cinder's method raises
    /// `UnicodeEncodeError` before it locks or enters anything, and leaves no
    /// file, key or node. We take the name (docs/openstack.md: a non-ASCII
    /// Global name cannot collide with any lock Cinder can hold), on the
    /// file/key/node Cinder would have used.
    async fn non_ascii_global(
        &mut self,
        entry: &CatalogEntry,
        target: &str,
        params: &Params,
        values: &[(&str, String)],
    ) {
        let what = format!("{:?} `{}` {target} {values:?}", self.mechanism, entry.id);
        let tag = self.tag();
        self.peer.call(&tag, target, values);
        match self.peer.done(&tag) {
            Done::Refused(e) if e.starts_with("UnicodeEncodeError") => {}
            other => panic!("{what}: Cinder should refuse a non-ASCII tooz name, got {other:?}"),
        }
        let request = self
            .locks
            .request(&entry.id, params)
            .unwrap_or_else(|e| panic!("{what}: our request: {}", e.report()));
        let ours = request.name.as_str().to_owned();
        self.assert_nothing_for(&ours);
        let guard = self.try_once(entry, params).await.unwrap_or_else(|e| {
            panic!("{what}: our lock on a name Cinder refuses: {}", e.report())
        });
        self.assert_lock_is_there(&ours, &format!("{what}, we holding"));
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("{what}: release: {}", e.report()));
        self.cases += 1;
    }

    /// `cinder.utils.synchronized(name, external=True)` against our Node lock
    /// of the same raw name, for the awkward names: oslo external locks take
    /// any name, non-ASCII included, and so do we, on the same file.
    async fn oslo_raw_names(&mut self) {
        for value in AWKWARD {
            let name = format!("{value}-{}", self.run);
            let what = format!("utils.synchronized({name:?}, external=True)");
            let tag = self.tag();
            self.peer.call(
                &tag,
                "cinder.utils:synchronized.external",
                &[("name", name.clone())],
            );
            let taken = self.peer.entered(&tag, PATIENCE).expect("entered");
            assert_eq!(
                taken,
                [Taken::Oslo {
                    name: name.clone(),
                    external: true
                }],
                "{what}"
            );
            let full = format!("cinder-{name}");
            self.assert_lock_is_there(&full, &what);
            let err = self
                .locks
                .lock_name(Scope::Node, &name, Wait::TryOnce)
                .await
                .expect_err("Cinder holds it");
            assert_eq!(
                err.kind(),
                ErrorKind::WouldBlock,
                "{what}: {}",
                err.report()
            );
            self.peer.finish(&tag);
            let guard = self
                .locks
                .lock_name(Scope::Node, &name, Wait::TryOnce)
                .await
                .unwrap_or_else(|e| panic!("{what}: after Cinder: {}", e.report()));
            let tag = self.tag();
            self.peer.call(
                &tag,
                "cinder.utils:synchronized.external",
                &[("name", name.clone())],
            );
            assert!(
                self.peer.entered(&tag, BLOCKED_FOR).is_none(),
                "{what}: Cinder entered while we hold"
            );
            guard.release().await.expect("release");
            self.peer
                .entered(&tag, PATIENCE)
                .expect("Cinder enters after our release");
            self.peer.finish(&tag);
            self.cases += 1;
        }
    }

    fn finish(self) {
        eprintln!(
            "{:?}: {} cases against Cinder {CINDER_VERSION}",
            self.mechanism, self.cases
        );
        self.peer.quit();
    }
}

/// Our parameters and Cinder's values for one value: every parameter gets
/// `value`, except a class-named one, which gets the class.
fn values_for(
    params: &[(&'static str, Source)],
    class_name: &str,
    value: &str,
) -> (Params, Vec<(&'static str, String)>) {
    let mut ours = Params::new();
    let mut theirs = Vec::new();
    for (param, source) in params {
        match source {
            Source::ClassName => ours.insert(*param, class_name),
            Source::Cinder(name) => {
                ours.insert(*param, value);
                theirs.push((*name, value.to_owned()));
            }
        }
    }
    (ours, theirs)
}

async fn catalog_against_cinder(mechanism: Mechanism) {
    let started = Instant::now();
    let Some(mut bench) = Bench::new(mechanism).await else {
        return;
    };
    bench.run_catalog().await;
    if mechanism == Mechanism::Oslo {
        bench.oslo_raw_names().await;
    }
    bench.finish();
    eprintln!("{mechanism:?}: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_against_cinder_oslo_lock_files() {
    catalog_against_cinder(Mechanism::Oslo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_against_cinder_tooz_file() {
    catalog_against_cinder(Mechanism::ToozFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_against_cinder_tooz_etcd3_http() {
    catalog_against_cinder(Mechanism::ToozEtcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_against_cinder_tooz_zookeeper() {
    catalog_against_cinder(Mechanism::ToozZookeeper).await;
}
