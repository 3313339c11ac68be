"""The Cinder side of tests/tests/cinder_catalog.rs: Cinder's own decorated
driver methods, run by the real Cinder (PyPI `cinder`, pinned in ci/python.sh).

    cinder_peer.py oslo LOCK_PATH      utils.synchronized(external=True) locks in
                                       LOCK_PATH ([oslo_concurrency] lock_path)
    cinder_peer.py tooz URL            cinder.coordination.COORDINATOR started on
                                       URL ([coordination] backend_url)

Cinder runs in its native-threading mode (no eventlet monkey patching, as with
OS_CINDER_DISABLE_EVENTLET_PATCHING=1); each call runs on its own thread.
Nothing of Cinder's locking is replaced: the decorators, the name rendering,
cinder.coordination.COORDINATOR, oslo.concurrency and tooz are the real ones
(COORDINATOR.get_lock and lockutils.lock are wrapped only to record the names
they are asked for, then called as they are). Only the array (the storage
system's SDK or REST client, the `cinder-rtstool` command, the kernel's nvmet
configfs) is a stand-in; the arrays' SDKs (infinisdk, storops) are no Cinder
dependencies and absent, so where a constructor or do_setup checks for one a
stand-in passes the check. The array stand-in's first call inside the
critical section prints ENTERED and blocks until told to go on, then raises
ArrayCallDone (a BaseException, so no driver `except Exception` swallows it),
which ends the method; the decorator releases the lock on the way out.

One stub of a missing import: cinder.volume.targets.nvmet imports `nvmet`
(nvmetcli's library, not on PyPI, a wrapper of the kernel's configfs). A
stand-in module takes its place in sys.modules before Cinder imports it; its
Subsystem is the array call.

Commands (one per line on stdin; answers are lines on stdout). Names, keys
and values travel hex-encoded (UTF-8), so that any character can:

    call TAG TARGET [NAME=HEX ...]
                      runs TARGET ("module:Class.method", see DRIVERS) with the
                      values the test's table gives (configuration options as
                      `configuration.X`, attributes by name, arguments as
                      `arg:X`), on a new thread. Answers, in time:
                        ENTERED TAG KIND:HEX[,KIND:HEX...]
                          the method holds its lock(s) and sits in the array
                          call; one item per name Cinder asked for, as Cinder
                          rendered it: KIND `coordination` (the COORDINATOR's
                          full name, prefix included), `external` or
                          `internal` (an oslo lockutils lock, without prefix)
                        DONE TAG ok              it returned (after the array call)
                        DONE TAG entered ERROR   it raised after entering
                        DONE TAG refused ERROR   it raised before any array call
    let TAG           lets TAG's array call return (then DONE TAG comes)
    etcd-get HEX      ETCD present|absent: whether the etcd key exists
    zk-children HEX   ZK none | ZK CHILD,CHILD...: the znode's children
    quit              exits

Errors of the harness itself are printed as one ERROR line; the process exits 1.
"""

import sys
import threading
import types
import uuid
import warnings

warnings.simplefilter("ignore")

OUT = threading.Lock()
CTX = threading.local()


def hx(text):
    return text.encode("utf-8").hex()


def unhx(text):
    return bytes.fromhex(text).decode("utf-8")


def say(*words):
    with OUT:
        sys.stdout.write(" ".join(words) + "\n")
        sys.stdout.flush()


class ArrayCallDone(BaseException):
    """Raised by the array stand-in once the test lets it go."""


class Call:
    def __init__(self, tag):
        self.tag = tag
        self.go = threading.Event()
        self.entered = False
        self.coordination = []
        self.oslo = []


def array_call(*_args, **_kwargs):
    """The stand-in of every array call: report, block, end the method."""
    call = getattr(CTX, "call", None)
    if call is None:
        raise RuntimeError("array stand-in called outside a test call")
    if not call.entered:
        call.entered = True
        items = [f"coordination:{hx(n)}" for n in call.coordination] + [
            f"{'external' if external else 'internal'}:{hx(n)}" for n, external in call.oslo
        ]
        say("ENTERED", call.tag, ",".join(items))
    call.go.wait()
    raise ArrayCallDone()


class Array:
    """A stand-in array object: any attribute path, called, is an array call."""

    def __getattr__(self, _name):
        return Array()

    def __call__(self, *args, **kwargs):
        return array_call(*args, **kwargs)


class SdkExceptions:
    """A stand-in for an absent array SDK's exception module: every name is an
    exception class no stand-in raises (so `except sdk_ex.X:` clauses work)."""

    def __init__(self):
        self._classes = {}

    def __getattr__(self, name):
        return self._classes.setdefault(name, type(name, (Exception,), {}))


def install_nvmet_stub():
    """`nvmet` (nvmetcli) is not on PyPI: the one stubbed import."""

    class Node:
        def __init__(self, *args, **kwargs):
            array_call()

    class CFSNotFound(Exception):
        pass

    stub = types.ModuleType("nvmet")
    for name in ("Root", "Subsystem", "Host", "Namespace", "Port", "Referral", "ANAGroup"):
        setattr(stub, name, type(name, (Node,), {}))
    # NVMET.__init__ builds a Root (configfs' top); that is no array call yet.
    stub.Root = type("Root", (), {})
    stub.nvme = types.SimpleNamespace(CFSNotFound=CFSNotFound)
    sys.modules["nvmet"] = stub


def record_lock_names():
    """Wrap the COORDINATOR and lockutils entry points to see the names Cinder
    renders, without changing what they do."""
    from cinder import coordination
    from oslo_concurrency import lockutils

    coordinator = coordination.COORDINATOR
    get_lock = coordinator.get_lock

    def recording_get_lock(name):
        call = getattr(CTX, "call", None)
        if call is not None:
            call.coordination.append(coordinator.prefix + name)
        return get_lock(name)

    coordinator.get_lock = recording_get_lock

    lock = lockutils.lock

    def recording_lock(name, lock_file_prefix=None, external=False, *args, **kwargs):
        call = getattr(CTX, "call", None)
        if call is not None:
            call.oslo.append([name, bool(external)])
        return lock(name, lock_file_prefix, external, *args, **kwargs)

    lockutils.lock = recording_lock


GROUP_COUNTER = iter(range(1 << 30))


def configuration(values, *opt_lists):
    """A real cinder.volume.configuration.Configuration for a fresh backend
    group, with the options Cinder registers and `values` set on it."""
    from oslo_config import cfg

    from cinder.volume import configuration as conf_mod
    from cinder.volume import driver

    group = "backend%d" % next(GROUP_COUNTER)
    conf = conf_mod.Configuration(driver.volume_opts, config_group=group)
    # The option lists VolumeDriver.__init__ appends, for targets built alone.
    for opts in (driver.iser_opts, driver.nvmeof_opts, driver.nvmet_opts, driver.scst_opts):
        conf.append_config_values(opts)
    for opts in opt_lists:
        conf.append_config_values(opts)
    for key, value in values.items():
        cfg.CONF.set_override(key, value, group=group)
    return conf


def volume(**fields):
    base = dict(
        id=str(uuid.uuid4()),
        name_id=str(uuid.uuid4()),
        replication_status=None,
        provider_location="/dev/stand-in",
        multiattach=False,
        volume_attachment=[],
    )
    base.update(fields)
    return types.SimpleNamespace(**base)


# ----------------------------------------------------------------------------
# One function per driver class: builds the object as Cinder does (its own
# __init__, and do_setup where that is where the lock's parameter is read),
# replaces the array with stand-ins, and returns {method: callable}. `values`
# holds the Cinder-side names the test's table gives (configuration options as
# `configuration.X`, attributes by name, method arguments as `arg:X`).


def lio(values):
    from cinder import utils
    from cinder.volume.targets import lio as mod

    # cinder-rtstool is the array here; LioAdm._execute is a staticmethod
    # calling utils.execute inside the lock.
    utils.execute = array_call
    return {"_execute": lambda: mod.LioAdm._execute("cinder-rtstool", "get-targets")}


def nvmet(values):
    from cinder.volume.targets import nvmet as mod

    conf = configuration({"target_protocol": "nvmet_tcp", "target_ip_address": "192.0.2.1"})
    target = mod.NVMET(configuration=conf, db=None, executor=None)
    vol = volume()
    return {
        "_map_volume": lambda: target._map_volume(vol, "/dev/stand-in"),
        "_locked_unmap_volume": lambda: target._locked_unmap_volume(vol),
    }


def solidfire(values):
    from cinder.volume.drivers import solidfire as mod

    # SolidFireDriver.__init__ asks the cluster for its info: the object is
    # made without it. The lock name takes only the class's driver_prefix and
    # the source id; the clone, all array work, is the stand-in.
    drv = mod.SolidFireDriver.__new__(mod.SolidFireDriver)
    drv._do_clone_volume = array_call
    drv._issue_api_request = array_call
    source = {"id": values["arg:source.id"], "volume_id": str(uuid.uuid4())}
    vol = volume()
    return {
        "create_cloned_volume": lambda: drv.create_cloned_volume(vol, source),
        "create_volume_from_snapshot": lambda: drv.create_volume_from_snapshot(vol, source),
    }


def infinidat(values):
    from cinder.volume.drivers import infinidat as mod
    from cinder.volume.drivers.san import san

    conf = configuration(
        {"san_ip": values["configuration.san_ip"], "san_login": "u", "san_password": "p"},
        san.san_opts,
        mod.infinidat_opts,
    )
    drv = mod.InfiniboxVolumeDriver(configuration=conf)
    # do_setup reads san_ip into management_address; infinisdk (the array's
    # SDK) is not installed: its presence check passes a stand-in, and the
    # array login returns a stand-in system.
    mod.infinisdk = Array()
    # infi.dtypes (infinisdk's port types) is absent with it: the driver only
    # builds and filters ports by these classes.
    mod.wwn = types.SimpleNamespace(WWN=type("WWN", (str,), {}))
    mod.iqn = types.SimpleNamespace(IQN=type("IQN", (str,), {}))
    drv._setup_and_get_system_object = lambda *a, **k: Array()
    drv.do_setup(None)
    return {
        # No connector ports: the first array call is the FC port listing.
        "_initialize_connection": lambda: drv._initialize_connection(Array(), {"wwpns": []}),
        # A force detach (no connector): the volume's mappings are read first.
        "_terminate_connection": lambda: drv._terminate_connection(Array(), None),
    }


def kaminario(module, cls):
    def build(values):
        import importlib

        from cinder.volume.drivers.kaminario import kaminario_common as common
        from cinder.volume.drivers.san import san

        mod = importlib.import_module(module)
        conf = configuration(
            {"san_ip": values["configuration.san_ip"], "san_login": "u", "san_password": "p"},
            san.san_opts,
            common.kaminario_opts,
        )
        drv = getattr(mod, cls)(configuration=conf)
        # The K2 REST client (krest) is the array.
        drv.client = Array()
        drv.target = Array()
        connector = {"wwpns": ["5000000000000001"], "initiator": "iqn.1994-05.com.example:h", "host": "h"}
        vol = volume()
        return {
            "initialize_connection": lambda: drv.initialize_connection(vol, connector),
            "terminate_connection": lambda: drv.terminate_connection(vol, connector),
        }

    return build


def unity_client(values):
    from cinder.volume.drivers.dell_emc.unity import client as mod

    # storops (the Unity SDK) is not installed: the constructor's presence
    # check passes a stand-in, and the system is a stand-in array.
    mod.storops = Array()
    mod.storops_ex = SdkExceptions()
    c = mod.UnityClient(values["host"], "u", "p")
    c._system = Array()
    return {"create_host": lambda: c.create_host(values["arg:name"])}


def unity_adapter(values):
    from cinder.volume.drivers.dell_emc.unity import adapter as mod
    from cinder.volume.drivers.dell_emc.unity import client as client_mod

    client_mod.storops = Array()
    client_mod.storops_ex = SdkExceptions()
    a = mod.CommonAdapter()
    # As do_setup: ip = san_ip, remove_empty_host from the configuration,
    # to_lock_host = remove_empty_host; the client property builds
    # UnityClient(ip, ...) whose `host` the lock name uses.
    a.ip = values["client.host"]
    a.username, a.password = "u", "p"
    a.remove_empty_host = True
    a.to_lock_host = True
    a._client = client_mod.UnityClient(a.ip, a.username, a.password)
    a._client._system = Array()
    host_name = values["arg:host_name"]
    return {
        "_create_host_and_attach": lambda: a._create_host_and_attach(host_name, Array()),
        "_detach_and_delete_host": lambda: a._detach_and_delete_host(host_name, Array()),
    }


def stx(module, cls):
    def build(values):
        import importlib

        from cinder.volume.drivers.stx import client as stx_client

        mod = importlib.import_module(module)
        c = getattr(mod, cls)("192.0.2.3", "u", "p", "http", False)
        # The array name is the serial number session_login reads from the array.
        c._array_name = values["_array_name"]
        # The array's HTTP API: requests.get inside the locked methods.
        real = stx_client.requests
        stx_client.requests = types.SimpleNamespace(get=array_call, exceptions=real.exceptions)
        c._is_mapped = array_call
        return {
            "_get_session_key": lambda: c._get_session_key(),
            "_api_request": lambda: c._api_request("/show/system"),
            "map_volume": lambda: c.map_volume("v", {"initiator": "iqn.x", "host": "h"}, "initiator"),
        }

    return build


def utils_synchronized(values):
    """A lock of the given name taken by cinder.utils.synchronized (external)."""
    from cinder import utils

    name = values["name"]

    @utils.synchronized(name, external=True)
    def locked():
        array_call()

    return {"external": locked}


def coordination_synchronized(values):
    """A lock of the given name taken by cinder.coordination.synchronized."""
    from cinder import coordination

    @coordination.synchronized("{name}")
    def locked(name):
        array_call()

    return {"coordinated": lambda: locked(values["name"])}


DRIVERS = {
    "cinder.volume.targets.lio:LioAdm": lio,
    "cinder.volume.targets.nvmet:NVMET": nvmet,
    "cinder.volume.drivers.solidfire:SolidFireDriver": solidfire,
    "cinder.volume.drivers.infinidat:InfiniboxVolumeDriver": infinidat,
    "cinder.volume.drivers.dell_emc.unity.client:UnityClient": unity_client,
    "cinder.volume.drivers.dell_emc.unity.adapter:CommonAdapter": unity_adapter,
    "cinder.utils:synchronized": utils_synchronized,
    "cinder.coordination:synchronized": coordination_synchronized,
}
for _m, _c in [
    ("cinder.volume.drivers.kaminario.kaminario_fc", "KaminarioFCDriver"),
    ("cinder.volume.drivers.kaminario.kaminario_iscsi", "KaminarioISCSIDriver"),
]:
    DRIVERS[f"{_m}:{_c}"] = kaminario(_m, _c)
for _m, _c in [
    ("cinder.volume.drivers.stx.client", "STXClient"),
    ("cinder.volume.drivers.san.hp.hpmsa_client", "HPMSAClient"),
    ("cinder.volume.drivers.lenovo.lenovo_client", "LenovoClient"),
    ("cinder.volume.drivers.dell_emc.powervault.client", "PVMEClient"),
]:
    DRIVERS[f"{_m}:{_c}"] = stx(_m, _c)


CALLS = {}


def one_line(e):
    return f"{type(e).__name__}: {e}".replace("\n", " ")


def run_call(call, method):
    CTX.call = call
    outcome = "ok"
    try:
        method()
    except ArrayCallDone:
        pass
    except BaseException as e:  # reported to the test
        outcome = ("entered " if call.entered else "refused ") + one_line(e)
    finally:
        CTX.call = None
    say("DONE", call.tag, outcome)


def start_call(tag, target, values):
    klass, _, method = target.rpartition(".")
    build = DRIVERS.get(klass)
    if build is None:
        raise KeyError(f"no harness for {klass} (add one to DRIVERS)")
    call = Call(tag)
    CALLS[tag] = call
    CTX.call = call
    try:
        methods = build(values)
    except Exception as e:  # a driver that cannot be built: the test fails with it
        say("DONE", tag, f"refused building {klass}: {one_line(e)}")
        return
    finally:
        CTX.call = None
    if method not in methods:
        raise KeyError(f"no harness for {target}")
    threading.Thread(target=run_call, args=(call, methods[method]), daemon=True).start()


def main(argv):
    if len(argv) != 3 or argv[1] not in ("oslo", "tooz"):
        say("ERROR usage: cinder_peer.py oslo LOCK_PATH | tooz URL")
        return 2
    mech, target = argv[1:]
    install_nvmet_stub()
    from oslo_config import cfg

    from cinder import objects

    objects.register_all()
    from cinder import coordination

    cfg.CONF([], project="cinder", default_config_files=[])
    etcd = zk = None
    if mech == "oslo":
        cfg.CONF.set_override("lock_path", target, group="oslo_concurrency")
    else:
        cfg.CONF.set_override("backend_url", target, group="coordination")
        coordination.COORDINATOR.start()
        backend = coordination.COORDINATOR.coordinator
        etcd = getattr(backend, "client", None) if target.startswith("etcd3") else None
        zk = getattr(backend, "_coord", None) if target.startswith(("zookeeper", "kazoo")) else None
    record_lock_names()
    say("READY")
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd = words[0]
            if cmd == "call":
                values = dict(w.split("=", 1) for w in words[3:])
                start_call(words[1], words[2], {k: unhx(v) for k, v in values.items()})
            elif cmd == "let":
                CALLS.pop(words[1]).go.set()
            elif cmd == "etcd-get":
                # As bytes: etcd3gw encodes a str key as Latin-1.
                say("ETCD", "present" if etcd.get(bytes.fromhex(words[1])) else "absent")
            elif cmd == "zk-children":
                path = unhx(words[1])
                children = zk.get_children(path) if zk.exists(path) else None
                say("ZK", "none" if children is None else ",".join(children))
            elif cmd == "quit":
                break
            else:
                say(f"ERROR unknown command {cmd!r}")
                return 1
    except Exception as e:  # reported to the test, which fails with it
        say(f"ERROR {type(e).__name__}: {e}")
        return 1
    finally:
        for call in CALLS.values():
            call.go.set()
        if mech != "oslo":
            coordination.COORDINATOR.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
