//! Who holds a lock and who waits for it
//! ([`Backend::status`](locks_core::Backend::status)), and what the backend
//! writes so that it can be told.
//!
//! # What is written
//! - At each lease grant, one identity key on that lease:
//!   `<prefix>__locks_holders/<lease id in hex>` ([`Layout::Mutex`]) or
//!   `/tooz/__locks_holders/<lease id in hex>` ([`Layout::Tooz`]), value
//!   `host:pid:program` and, on a second line, `granted_unix=<seconds>`. It
//!   goes with the lease, so it never outlives the client. Neither
//!   `etcdctl lock` nor tooz reads it. Writing it is best effort: a role that
//!   may not write there leaves the holders' identities unknown, nothing else.
//! - [`Layout::Mutex`]: the contender key's value (empty for `etcdctl lock`,
//!   which never reads others' values) is the request's identity,
//!   `host:pid[:label]`. That is the same put as before: nothing more per
//!   acquire.
//!
//! # What is read
//! [`Layout::Mutex`]: the keys under `<prefix><name>/` by create revision,
//! the first the holder, the rest waiters in queue order; token = create
//! revision (as the guards'). Identity from the key's value, the program from
//! the lease's identity key. [`Layout::Tooz`]: the one key `/tooz/locks<name>`
//! (held or not), its holder's identity from the lease's identity key; no
//! label, and waiters do not show (they only watch the key). Keys of leases
//! without an identity key (`etcdctl lock`, tooz, another client) show their
//! token only, with a note. etcd records no times: `since` stays unknown.
//!
//! [`all`] (`statuses`) finds the busy names from the keys alone (see
//! [`busy_names`]) and then tells each as [`status`] does.

use std::time::{Duration, SystemTime};

use etcd_client::{GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use locks_core::{
    Error, ErrorKind, Excerpt, LockName, LockRequest, LockStatus, Party, Result, Scope,
};

use crate::config::Layout;
use crate::core::Core;
use crate::mutex::{get_kvs, name_prefix};

/// The path component under the prefix that holds the identity keys.
pub(crate) const HOLDERS: &str = "__locks_holders/";

/// How many gets one status transaction carries (etcd allows 128 by default).
const GETS_PER_TXN: usize = 100;

/// The prefix of the identity keys.
pub(crate) fn holders_prefix(core: &Core) -> Vec<u8> {
    match core.layout {
        Layout::Mutex => {
            let mut key = core.prefix.clone();
            key.extend_from_slice(HOLDERS.as_bytes());
            key
        }
        Layout::Tooz => format!("/tooz/{HOLDERS}").into_bytes(),
    }
}

/// Refuses the one [`Layout::Mutex`] name whose key range holds the identity
/// keys (its acquire would wait for every client's lease to end).
///
/// # Errors
/// [`ErrorKind::InvalidName`] for the name `__locks_holders`.
pub(crate) fn refuse_reserved(core: &Core, name: &LockName) -> Result<()> {
    if core.layout == Layout::Mutex && HOLDERS.strip_suffix('/') == Some(name.as_str()) {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name `{name}` is reserved with etcd's layout=mutex: its keys hold the clients' identities; rename the lock"
            ),
        ));
    }
    Ok(())
}

fn identity_key(core: &Core, lease: i64) -> Vec<u8> {
    let mut key = holders_prefix(core);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// This host's name, read once per process.
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(locks_core::host_name)
}

/// The value of a [`Layout::Mutex`] contender key: `host:pid[:label]`, as
/// [`LockRequest::holder_identity`] but without reading the host name on
/// every acquire.
pub(crate) fn contender_value(request: &LockRequest) -> Vec<u8> {
    let pid = std::process::id();
    match &request.label {
        Some(label) => format!("{}:{pid}:{label}", host()),
        None => format!("{}:{pid}", host()),
    }
    .into_bytes()
}

/// Writes the identity key of lease `lease` (best effort; see the module docs).
pub(crate) async fn announce(core: &Core, lease: i64) {
    let me = Party::this_process();
    let granted = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = format!(
        "{}:{}:{}\ngranted_unix={granted}",
        host(),
        std::process::id(),
        me.program.unwrap_or_default()
    );
    let key = identity_key(core, lease);
    // At most half the request timeout: the acquire that granted the lease
    // waits for this, and the identity is not worth a failed acquire.
    let writing = core.call("writing the client's identity", |client| {
        let (key, value) = (key.clone(), value.clone());
        async move {
            client
                .kv_client()
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        }
    });
    let _ = tokio::time::timeout(core.timeout / 2, writing).await;
}

/// A client's identity key, parsed.
struct Identity {
    host: Option<String>,
    pid: Option<u32>,
    program: Option<String>,
    granted: Option<SystemTime>,
}

fn parse_identity(value: &[u8]) -> Option<Identity> {
    let text = std::str::from_utf8(value).ok()?;
    let mut lines = text.lines();
    let mut fields = lines.next()?.splitn(3, ':');
    let host = fields.next().filter(|h| !h.is_empty()).map(str::to_owned);
    let pid = fields.next()?.parse().ok()?;
    let program = fields.next().filter(|p| !p.is_empty()).map(str::to_owned);
    let granted = lines
        .find_map(|l| l.strip_prefix("granted_unix="))
        .and_then(|s| s.parse().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    Some(Identity {
        host,
        pid: Some(pid),
        program,
        granted,
    })
}

/// Who holds `name` and who waits, read within the request timeout.
pub(crate) async fn status(
    core: &Core,
    name: &LockName,
    scope: Scope,
    describe: String,
) -> Result<LockStatus> {
    // Each request is bounded by the request timeout; the whole by the same
    // (with a little room, so that a request's own error, which says what
    // each member did, wins).
    let limit = core.timeout + Duration::from_millis(100);
    match tokio::time::timeout(limit, read(core, name, scope, describe)).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "etcd at {}: reading who holds lock `{name}` got no answer within {limit:?}; check that etcd runs and is reachable there",
                core.endpoints
            ),
        )),
    }
}

async fn read(core: &Core, name: &LockName, scope: Scope, describe: String) -> Result<LockStatus> {
    refuse_reserved(core, name)?;
    let mut status = LockStatus::free(name.clone(), scope, describe);
    let (range, options) = match core.layout {
        Layout::Mutex => (
            name_prefix(core, name.as_str()),
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend),
        ),
        Layout::Tooz => (crate::tooz::key_of(core, name.as_str()), GetOptions::new()),
    };
    let listed = core
        .txn(
            "reading a lock's contenders",
            &Txn::new().and_then([TxnOp::get(range, Some(options))]),
        )
        .await?;
    let responses = listed.op_responses();
    let kvs = get_kvs(&responses, 0);
    if kvs.is_empty() {
        return Ok(status);
    }
    // The identity keys of the contenders' leases, a transaction per 100.
    let mut leases: Vec<i64> = kvs.iter().map(etcd_client::KeyValue::lease).collect();
    leases.sort_unstable();
    leases.dedup();
    let mut identities = std::collections::HashMap::new();
    for chunk in leases.chunks(GETS_PER_TXN) {
        let gets = chunk
            .iter()
            .map(|&lease| TxnOp::get(identity_key(core, lease), None));
        let found = core
            .txn(
                "reading the identities of a lock's contenders",
                &Txn::new().and_then(gets.collect::<Vec<_>>()),
            )
            .await?;
        let responses = found.op_responses();
        for (i, &lease) in chunk.iter().enumerate() {
            if let Some(identity) = get_kvs(&responses, i)
                .first()
                .and_then(|kv| parse_identity(kv.value()))
            {
                identities.insert(lease, identity);
            }
        }
    }
    let mut foreign: Vec<String> = Vec::new();
    let mut granted = None;
    let own_range = name_prefix(core, name.as_str());
    let mut longer: Option<String> = None;
    for kv in kvs {
        // etcd's mutex range of `a` holds the contenders of `a/b` too.
        if core.layout == Layout::Mutex
            && kv
                .key()
                .strip_prefix(own_range.as_slice())
                .is_some_and(|rest| rest.contains(&b'/'))
        {
            longer.get_or_insert_with(|| String::from_utf8_lossy(kv.key()).into_owned());
        }
        let identity = identities.get(&kv.lease());
        let mut party = match core.layout {
            Layout::Mutex => Party::from_identity(&String::from_utf8_lossy(kv.value())),
            Layout::Tooz => Party::default(),
        };
        match identity {
            Some(identity) => {
                if party.pid.is_none() || party.pid != identity.pid {
                    // The value says nothing (a key written before values
                    // held identities): the lease's client is the contender.
                    party = Party {
                        host: identity.host.clone(),
                        pid: identity.pid,
                        ..Party::default()
                    };
                }
                party.program.clone_from(&identity.program);
            }
            // Ours by its value, on a lease whose identity key could not be
            // written: host, pid and label, no program.
            None if party.pid.is_some() => {}
            None => {
                party = Party::default();
                foreign.push(format!("{:x}", kv.lease()));
            }
        }
        party.token = u64::try_from(kv.create_revision()).ok();
        if status.holder.is_none() {
            granted = identity.and_then(|i| i.granted);
            status.holder = Some(party);
        } else {
            status.waiters.push(party);
        }
    }
    if let Some(first) = foreign.first() {
        let holder_foreign = status.holder.as_ref().is_some_and(|h| h.pid.is_none());
        let whose = if holder_foreign {
            "the holder is not a client of this library"
        } else {
            "a waiter is not a client of this library"
        };
        let who = match core.layout {
            Layout::Mutex => "etcdctl lock, a Go concurrency.Mutex or another client",
            Layout::Tooz => "tooz, as Cinder uses it, or another client",
        };
        status.notes.push(format!(
            "{whose} ({} contender(s), lease {} first, with no identity key under {}: {who}): their host and pid are unknown",
            foreign.len(),
            first,
            Excerpt::ticked(&String::from_utf8_lossy(&holders_prefix(core)))
        ));
    }
    if let Some(key) = longer {
        status.notes.push(format!(
            "contenders of longer names count here (first: key {}): with layout=mutex the range of `{name}` holds the keys of every name that extends it with `/`, as in etcd's own mutex",
            Excerpt::ticked(&key)
        ));
    }
    status
        .notes
        .push("etcd records no times: since when each holds or waits is unknown".to_owned());
    if let Some(at) = granted {
        let unix = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // By the holder's clock, so only roughly "ago" from here.
        let ago = SystemTime::now()
            .duration_since(at)
            .map_or(String::new(), |d| format!("about {} s ago, ", d.as_secs()));
        status.notes.push(format!(
            "the holder's client got its lease {ago}at unix time {unix} by its own clock (not when it took this lock)"
        ));
    }
    if core.layout == Layout::Tooz {
        status.notes.push(
            "layout=tooz: waiters are not visible (they leave nothing in etcd: ours watch the key, tooz polls it) and labels are not recorded"
                .to_owned(),
        );
    }
    Ok(status)
}

/// How many keys one page of the walk of [`all`] reads.
const PAGE: i64 = 1000;

/// Every lock with a contender key, as [`status`] tells each; the whole walk
/// within the request timeout.
pub(crate) async fn all(core: &Core, scope: Scope, describe: String) -> Result<Vec<LockStatus>> {
    let limit = core.timeout + Duration::from_millis(100);
    let walking = async {
        let mut statuses = Vec::new();
        for name in busy_names(core).await? {
            let status = read(core, &name, scope, describe.clone()).await?;
            // Released since the walk saw it: nothing to show.
            if status.is_held() || !status.waiters.is_empty() {
                statuses.push(status);
            }
        }
        Ok(statuses)
    };
    match tokio::time::timeout(limit, walking).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "etcd at {}: listing the locks was not done within {limit:?}; check that etcd runs and is reachable there",
                core.endpoints
            ),
        )),
    }
}

/// The names with a contender key, read page by page (keys only): with
/// [`Layout::Mutex`] the keys `<prefix><name>/<hex>` whose last component is
/// the id of the lease they are on (as `concurrency.Mutex` names them), with
/// [`Layout::Tooz`] every key on a lease under `/tooz/locks`.
async fn busy_names(core: &Core) -> Result<Vec<LockName>> {
    let prefix = core.prefix.clone();
    let (mut from, end) = if prefix.is_empty() {
        // Every key: from "\0", with etcd's "\0" end meaning "no end".
        (vec![0], vec![0])
    } else {
        (prefix.clone(), prefix_end(&prefix))
    };
    let reserved = HOLDERS.strip_suffix('/').unwrap_or(HOLDERS);
    let mut names = std::collections::BTreeMap::new();
    loop {
        let page = core
            .call("listing the lock keys", |client| {
                let (key, end) = (from.clone(), end.clone());
                async move {
                    client
                        .kv_client()
                        .get(
                            key,
                            Some(
                                GetOptions::new()
                                    .with_range(end)
                                    .with_keys_only()
                                    .with_limit(PAGE),
                            ),
                        )
                        .await
                }
            })
            .await?;
        for kv in page.kvs() {
            let Some(rest) = kv.key().strip_prefix(prefix.as_slice()) else {
                continue;
            };
            let name = match core.layout {
                _ if kv.lease() == 0 => continue,
                Layout::Tooz => rest,
                Layout::Mutex => {
                    let Some(slash) = rest.iter().rposition(|&b| b == b'/') else {
                        continue;
                    };
                    if rest[slash + 1..] != *format!("{:x}", kv.lease()).as_bytes() {
                        continue;
                    }
                    &rest[..slash]
                }
            };
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if core.layout == Layout::Mutex && name == reserved {
                continue;
            }
            if !names.contains_key(name)
                && let Ok(valid) = LockName::new(name)
            {
                names.insert(name.to_owned(), valid);
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(names.into_values().collect())
}

/// The end of the key range of everything that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse() {
        let id = parse_identity(b"node-1:42:cinder-volume\ngranted_unix=1700000000").unwrap();
        assert_eq!(id.host.as_deref(), Some("node-1"));
        assert_eq!(id.pid, Some(42));
        assert_eq!(id.program.as_deref(), Some("cinder-volume"));
        assert_eq!(
            id.granted,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        let bare = parse_identity(b"node-1:42").unwrap();
        assert_eq!((bare.program, bare.granted), (None, None));
        assert!(parse_identity(b"").is_none());
        assert!(parse_identity(b"\x10\x20 random bytes").is_none());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
