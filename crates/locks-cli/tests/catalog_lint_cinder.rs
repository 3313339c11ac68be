//! `locks catalog lint --cinder PATH` against Cinder trees: a small fixture
//! tree written here (a renamed function and a changed name prefix must be
//! reported, a removed driver must not fail), and, when
//! `LOCKS_TEST_CINDER_SRC` names a real Cinder 29.0.0 tree (the directory
//! containing `cinder/`, or the package itself), the built-in catalog against it.

use std::path::Path;
use std::process::Command;

const EXIT_CONFIG: i32 = 78;

const LIO: &str = r#"from cinder import utils


class LioAdm(object):
    # @utils.synchronized('commented-out', external=True)
    @staticmethod
    @utils.synchronized('lioadm', external=True)
    def _execute(*args, **kwargs):
        """Locked execution: synchronized('not-this') is in a docstring."""
        return utils.execute(*args, **kwargs)

    def _get_target(self, iqn):
        return self._execute('cinder-rtstool', 'get-targets')
"#;

const INFINIDAT: &str = r#"from cinder import coordination


class InfiniboxVolumeDriver(object):
    def do_setup(self, context):
        self.management_address = self.configuration.san_ip

    @coordination.synchronized('infinidat-{self.management_address}-lock')
    def @INIT@(self, infinidat_volume, connector):
        return None

    def initialize_connection(self, volume, connector, **kwargs):
        return self.@INIT@(volume, connector)
"#;

const KAMINARIO_COMMON: &str = r#"K2_LOCK_PREFIX = '@PREFIX@'


class KaminarioCinderDriver(object):
    def __init__(self, *args, **kwargs):
        k2_lock_sfx = self.configuration.safe_get('san_ip')
        self.k2_lock_name = "%s-%s" % (K2_LOCK_PREFIX, k2_lock_sfx)
"#;

const KAMINARIO_FC: &str = r#"from cinder import coordination
from cinder.volume.drivers.kaminario import kaminario_common as common


class KaminarioFCDriver(common.KaminarioCinderDriver):
    @coordination.synchronized('{self.k2_lock_name}')
    def initialize_connection(self, volume, connector):
        return None

    @coordination.synchronized('{self.k2_lock_name}')
    def terminate_connection(self, volume, connector, **kwargs):
        return None
"#;

/// The volume manager calls the drivers' connection methods.
const MANAGER: &str = r#"class VolumeManager(object):
    def initialize_connection(self, context, volume, connector):
        return self.driver.initialize_connection(volume, connector)

    def terminate_connection(self, context, volume, connector):
        self.driver.terminate_connection(volume, connector)
"#;

const STX_CLIENT: &str = r#"from cinder import coordination


class STXClient(object):
    def __init__(self, host):
        self._driver_name = self.__class__.__name__.split('.')[0]
        self._array_name = 'unknown'

    def session_login(self):
        self._get_session_key()
        self._array_name = self.get_serial_number()

    @coordination.synchronized('{self._driver_name}-{self._array_name}')
    def _get_session_key(self):
        return None

    @coordination.synchronized('{self._driver_name}-{self._array_name}')
    def _api_request(self, path, *args, **kargs):
        return None

    def _request(self, path):
        return self._api_request(path)
"#;

fn entry(id: &str, name: &str, methods: &[&str], file: &str, extra: &str) -> String {
    let methods: Vec<String> = methods.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[lock]]\nid = \"{id}\"\ndriver = \"d\"\nscope = \"global\"\ncritical_section = \"c\"\n\
         name = \"{name}\"\nwhere = [{}]\nfile = \"{file}\"\n{extra}\n",
        methods.join(", ")
    )
}

/// The fixture catalog: four entries as the built-in catalog declares them.
fn catalog() -> String {
    [
        entry(
            "lio",
            "lioadm",
            &["_execute"],
            "cinder/volume/targets/lio.py",
            "",
        ),
        entry(
            "infinidat",
            "infinidat-{management_address}-lock",
            &["_initialize_connection"],
            "cinder/volume/drivers/infinidat.py",
            "",
        ),
        entry(
            "kaminario-fc",
            "Kaminario-{san_ip}",
            &["initialize_connection", "terminate_connection"],
            "cinder/volume/drivers/kaminario/kaminario_fc.py",
            "name_file = \"cinder/volume/drivers/kaminario/kaminario_common.py\"",
        ),
        entry(
            "hgst",
            "hgst-devices",
            &["create_volume"],
            "cinder/volume/drivers/hgst.py",
            "removed_upstream = \"29.0.0\"",
        ),
    ]
    .concat()
}

/// Writes a Cinder-shaped tree under `root`: Infinidat's locked function
/// named `init`, Kaminario's lock prefix `prefix`.
fn tree(root: &Path, init: &str, prefix: &str) {
    let files = [
        ("cinder/__init__.py", String::new()),
        ("cinder/volume/__init__.py", String::new()),
        ("cinder/volume/manager.py", MANAGER.to_owned()),
        ("cinder/volume/targets/lio.py", LIO.to_owned()),
        (
            "cinder/volume/drivers/infinidat.py",
            INFINIDAT.replace("@INIT@", init),
        ),
        (
            "cinder/volume/drivers/kaminario/kaminario_common.py",
            KAMINARIO_COMMON.replace("@PREFIX@", prefix),
        ),
        (
            "cinder/volume/drivers/kaminario/kaminario_fc.py",
            KAMINARIO_FC.to_owned(),
        ),
        ("cinder/volume/drivers/stx/client.py", STX_CLIENT.to_owned()),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

/// Runs `locks catalog lint --cinder TREE` with `catalog` (None: the built-in one).
fn lint(dir: &Path, catalog: Option<&str>, tree: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_locks"));
    cmd.env_remove("LOCKS_CONFIG");
    if let Some(catalog) = catalog {
        std::fs::write(dir.join("catalog.toml"), catalog).expect("write catalog");
        std::fs::write(dir.join("locks.toml"), "catalog = \"catalog.toml\"\n").expect("write");
        cmd.arg("--config").arg(dir.join("locks.toml"));
    }
    let out = cmd
        .args(["catalog", "lint", "--cinder"])
        .arg(tree)
        .output()
        .expect("running locks catalog lint");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report block of entry `id`: its line and the problem lines under it.
fn block<'a>(stdout: &'a str, id: &str) -> &'a str {
    let start = stdout
        .lines()
        .position(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.trim_end_matches(':') == id)
        })
        .unwrap_or_else(|| panic!("no report for {id}:\n{stdout}"));
    let lines: Vec<&str> = stdout.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.starts_with("  - "))
        .map_or(lines.len(), |n| start + 1 + n);
    let from = lines[..start].iter().map(|l| l.len() + 1).sum::<usize>();
    let to = lines[..end].iter().map(|l| l.len() + 1).sum::<usize>();
    &stdout[from..to.min(stdout.len())]
}

#[test]
fn a_tree_that_matches_the_catalog_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    tree(&root, "_initialize_connection", "Kaminario");
    let (code, stdout, stderr) = lint(dir.path(), Some(&catalog()), &root);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 entries: 3 ok, 1 removed upstream, 0 mismatches"),
        "{stdout}"
    );
    assert!(
        block(&stdout, "lio")
            .starts_with("ok        lio: `lioadm` at cinder/volume/targets/lio.py:7"),
        "{stdout}"
    );
    let kaminario = block(&stdout, "kaminario-fc");
    assert!(
        kaminario.starts_with("ok ")
            && kaminario.contains(
                "`Kaminario-{san_ip}` at cinder/volume/drivers/kaminario/kaminario_fc.py:6"
            )
            && kaminario.contains("kaminario_common.py:1 `K2_LOCK_PREFIX = 'Kaminario'`")
            && kaminario
                .contains("where: initialize_connection (line 7), terminate_connection (line 11)"),
        "{stdout}"
    );
    assert!(
        block(&stdout, "hgst").starts_with(
            "removed   hgst: cinder/volume/drivers/hgst.py is not in this tree: removed upstream, as the \
             catalog says (gone from Cinder 29.0.0)"
        ),
        "{stdout}"
    );
    // The package directory itself is accepted too.
    let (code, stdout, _) = lint(dir.path(), Some(&catalog()), &root.join("cinder"));
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn a_renamed_function_and_a_changed_prefix_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    tree(&root, "_init_connection", "K2");
    let (code, stdout, stderr) = lint(dir.path(), Some(&catalog()), &root);
    assert_eq!(code, EXIT_CONFIG, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 entries: 1 ok, 1 removed upstream, 2 mismatches"),
        "{stdout}"
    );
    assert!(block(&stdout, "lio").starts_with("ok "), "{stdout}");
    assert!(block(&stdout, "hgst").starts_with("removed "), "{stdout}");

    let infinidat = block(&stdout, "infinidat");
    assert!(
        infinidat.starts_with("MISMATCH  infinidat:\n")
            && infinidat.contains(
                "  - `where` function `_initialize_connection` is not defined in \
                 cinder/volume/drivers/infinidat.py; functions there that take a lock: \
                 `_init_connection` (line 9)"
            ),
        "{stdout}"
    );
    let kaminario = block(&stdout, "kaminario-fc");
    assert!(
        kaminario.starts_with("MISMATCH  kaminario-fc:\n")
            && kaminario.contains(
                "  - name `Kaminario-{san_ip}` is not built in \
                 cinder/volume/drivers/kaminario/kaminario_fc.py (with \
                 cinder/volume/drivers/kaminario/kaminario_common.py); its nearest lock name: `K2-{…}` \
                 at cinder/volume/drivers/kaminario/kaminario_fc.py:6"
            )
            && kaminario.contains("kaminario_common.py:1 `K2_LOCK_PREFIX = 'K2'`"),
        "{stdout}"
    );
}

#[test]
fn the_seed_documents_lowercase_kaminario_name_is_caught() {
    // The seed document's entry: `kaminario-{san_ip}`, no name_file. The
    // prefix is found in the neighbouring kaminario_common.py all the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    tree(&root, "_initialize_connection", "Kaminario");
    let seed = entry(
        "kaminario-fc",
        "kaminario-{san_ip}",
        &["initialize_connection", "terminate_connection"],
        "cinder/volume/drivers/kaminario/kaminario_fc.py",
        "",
    );
    let (code, stdout, _) = lint(dir.path(), Some(&seed), &root);
    assert_eq!(code, EXIT_CONFIG, "{stdout}");
    assert!(
        block(&stdout, "kaminario-fc").contains(
            "its nearest lock name: `Kaminario-{…}` (differs only in case) at \
             cinder/volume/drivers/kaminario/kaminario_fc.py:6"
        ),
        "{stdout}"
    );
}

#[test]
fn a_where_function_that_takes_no_lock_is_caught() {
    // The seed document's Infinidat entry: the public method, which only
    // calls the locked private one.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    tree(&root, "_initialize_connection", "Kaminario");
    let seed = entry(
        "infinidat",
        "infinidat-{management_address}-lock",
        &["initialize_connection"],
        "cinder/volume/drivers/infinidat.py",
        "",
    );
    let (code, stdout, _) = lint(dir.path(), Some(&seed), &root);
    assert_eq!(code, EXIT_CONFIG, "{stdout}");
    assert!(
        block(&stdout, "infinidat").contains(
            "  - `where` function `initialize_connection` (line 12) of cinder/volume/drivers/infinidat.py \
             takes no lock; functions there that take a lock: `_initialize_connection` (line 9)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_gone_file_not_marked_removed_says_where_its_lock_went() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("src");
    tree(&root, "_initialize_connection", "Kaminario");
    let dothill = entry(
        "dothill-api",
        "{driver_name}-{array_name}",
        &["_get_session_key", "_api_request"],
        "cinder/volume/drivers/dothill/dothill_client.py",
        "",
    );
    let (code, stdout, _) = lint(dir.path(), Some(&dothill), &root);
    assert_eq!(code, EXIT_CONFIG, "{stdout}");
    let report = block(&stdout, "dothill-api");
    assert!(
        report.contains(
            "  - cinder/volume/drivers/dothill/dothill_client.py is not in this tree (if the driver was \
             removed upstream, mark the entry `removed_upstream = \"VERSION\"`)"
        ) && report.contains(
            "  - the lock and `_get_session_key`, `_api_request` are now in: \
             cinder/volume/drivers/stx/client.py:13 (point `file` there)"
        ),
        "{stdout}"
    );
    // Marked removed, the same entry is reported, not failed.
    let removed = dothill.replace("file =", "removed_upstream = \"29.0.0\"\nfile =");
    let (code, stdout, _) = lint(dir.path(), Some(&removed), &root);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        block(&stdout, "dothill-api").starts_with("removed "),
        "{stdout}"
    );
}

#[test]
fn a_path_that_is_not_a_cinder_tree_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = lint(dir.path(), None, dir.path());
    assert_eq!(code, EXIT_CONFIG, "{stderr}");
    assert!(
        stderr.contains("not a Cinder source tree or installed package")
            && stderr.contains("the directory that contains `cinder/`"),
        "{stderr}"
    );
}

#[test]
fn the_builtin_catalog_matches_the_real_cinder() {
    let Some(src) = std::env::var_os("LOCKS_TEST_CINDER_SRC") else {
        eprintln!("skipped: LOCKS_TEST_CINDER_SRC names no Cinder 29.0.0 tree");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = lint(dir.path(), None, Path::new(&src));
    eprintln!("{stdout}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("checking the catalog against Cinder 29.0.0 at ")
            || stdout.contains("checking the catalog against Cinder (version not recorded) at "),
        "the catalog was checked against Cinder 29.0.0: {stdout}"
    );
    assert!(
        stdout.contains("14 entries: 11 ok, 3 removed upstream, 0 mismatches"),
        "{stdout}"
    );
    for id in ["hgst", "dothill-api", "dothill-map"] {
        assert!(block(&stdout, id).starts_with("removed "), "{id}: {stdout}");
    }
    assert!(
        block(&stdout, "kaminario-fc").contains("K2_LOCK_PREFIX = 'Kaminario'"),
        "{stdout}"
    );
}

#[test]
fn the_seed_documents_entries_are_caught_in_the_real_cinder() {
    let Some(src) = std::env::var_os("LOCKS_TEST_CINDER_SRC") else {
        eprintln!("skipped: LOCKS_TEST_CINDER_SRC names no Cinder 29.0.0 tree");
        return;
    };
    // The entries the catalog corrected, as the seed document has them.
    let seed = [
        entry(
            "nvmet",
            "nvmetcli",
            &["delete_nvmeof_target", "create_nvmeof_target"],
            "cinder/volume/targets/nvmet.py",
            "",
        ),
        entry(
            "solidfire",
            "solidfire-{resource_id}",
            &["locked_image_id_operation", "locked_source_id_operation"],
            "cinder/volume/drivers/solidfire.py",
            "",
        ),
        entry(
            "infinidat",
            "infinidat-{management_address}-lock",
            &["initialize_connection", "terminate_connection"],
            "cinder/volume/drivers/infinidat.py",
            "",
        ),
        entry(
            "kaminario-iscsi",
            "kaminario-{san_ip}",
            &["initialize_connection", "terminate_connection"],
            "cinder/volume/drivers/kaminario/kaminario_iscsi.py",
            "",
        ),
        entry(
            "dothill-map",
            "{driver_name}-{array_name}-map",
            &["map_volume"],
            "cinder/volume/drivers/dothill/dothill_client.py",
            "",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, _) = lint(dir.path(), Some(&seed), Path::new(&src));
    assert_eq!(code, EXIT_CONFIG, "{stdout}");
    assert!(
        stdout.contains("5 entries: 0 ok, 0 removed upstream, 5 mismatches"),
        "{stdout}"
    );
    for (id, says) in [
        ("nvmet", "functions there that take a lock: `_map_volume`"),
        ("solidfire", "`locked_image_id_operation` (line "),
        (
            "infinidat",
            "functions there that take a lock: `_initialize_connection`",
        ),
        ("kaminario-iscsi", "`Kaminario-{…}` (differs only in case)"),
        (
            "dothill-map",
            "are now in: cinder/volume/drivers/stx/client.py:",
        ),
    ] {
        assert!(block(&stdout, id).contains(says), "{id}: {stdout}");
    }
}
