//! `layout=mutex`: the protocol of etcd's `concurrency.Mutex`, which
//! `etcdctl lock` and the server's Lock RPC use.
//!
//! Key `<prefix><name>/<lease id in lowercase hex>`, value empty, attached to
//! the lease. The contender whose key has the lowest create revision under
//! `<prefix><name>/` holds the lock; every other contender watches the key
//! created just before its own until that key is deleted, then looks again.

use std::sync::Arc;

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use locks_core::{
    Backend, Error, ErrorKind, LocalTurn, LockName, LockRequest, LockState, Result, Wait,
};

use crate::core::{Check, Core, OwnedKey, is_lease_not_found};
use crate::held::{Contender, EtcdHeld};
use crate::wait::{RETRY_PAUSE, Watched, until_deleted};

/// Restarts that cost no waiting (a stale key of ours, a lease that expired
/// just before use) before giving up.
const MAX_QUICK_RESTARTS: u32 = 5;

/// The key range of one lock name: `<prefix><name>/`.
pub(crate) fn name_prefix(core: &Core, name: &str) -> Vec<u8> {
    let mut pfx = core.prefix.clone();
    pfx.extend_from_slice(name.as_bytes());
    pfx.push(b'/');
    pfx
}

pub(crate) async fn acquire(
    core: &Arc<Core>,
    backend: &dyn Backend,
    request: &LockRequest,
    local: LocalTurn<LockName>,
) -> Result<(EtcdHeld, i64)> {
    crate::status::refuse_reserved(core, &request.name)?;
    let pfx = name_prefix(core, request.name.as_str());
    let mut contender = Contender::new(Arc::clone(core), local);
    let mut quick_restarts = 0;
    // A waiter with a timeout keeps trying through an outage until its
    // timeout (the backend then reports what is down); one that waits
    // forever gives up once its lease is lost and no new one can be granted
    // (it cannot keep its place then), and a try-once does not wait at all.
    let ride_out = matches!(request.wait, Wait::Timeout(_));
    // Whether a create of ours may have been applied without our seeing the
    // answer (the connection broke, the member went away): a key of ours
    // found then is that create's, and keeps its place.
    let mut maybe_created: Option<i64> = None;
    loop {
        if quick_restarts > MAX_QUICK_RESTARTS {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "etcd at {}: gave up acquiring lock `{}` after {MAX_QUICK_RESTARTS} restarts \
                     (the lease kept expiring or our key kept reappearing)",
                    core.endpoints, request.name
                ),
            ));
        }
        let lease = match core.lease().await {
            Ok(lease) => lease,
            Err(e) if ride_out && e.kind() == ErrorKind::Unavailable => {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if maybe_created.is_some_and(|id| id != lease.id) {
            maybe_created = None;
        }
        let mut key = pfx.clone();
        key.extend_from_slice(format!("{:x}", lease.id).as_bytes());
        contender.arm(OwnedKey {
            key: key.clone(),
            check: Check::KeyIsOurs,
            lease: Arc::clone(&lease),
        });

        // Create our key if absent and see who is first, in one round trip.
        // The create is safe to repeat: if an earlier attempt was applied
        // but its answer lost, the key exists and the else branch reads it.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                // The value is our identity, for `status` (etcdctl lock
                // writes it empty and never reads others').
                TxnOp::put(
                    key.clone(),
                    crate::status::contender_value(request),
                    Some(PutOptions::new().with_lease(lease.id)),
                ),
                TxnOp::get(pfx.clone(), Some(first_created())),
            ])
            .or_else([
                TxnOp::get(key.clone(), Some(GetOptions::new().with_keys_only())),
                TxnOp::get(pfx.clone(), Some(first_created())),
            ]);
        // Attempts of this one request: `call` sends it again to the next
        // member when an attempt failed for a transport reason, maybe after
        // it was applied.
        let mut attempts = 0;
        let created = match core
            .counted_txn("creating a lock key", &txn, &mut attempts)
            .await
        {
            Ok(created) => created,
            Err(e) if is_lease_not_found(&e) => {
                // The lease expired before our keep-alive noticed.
                lease.state.set(LockState::Lost);
                contender.disarm();
                maybe_created = None;
                quick_restarts += 1;
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                // No member answered within the request timeout: the create
                // may or may not have been applied.
                maybe_created = Some(lease.id);
                if ride_out && !lease.is_lost() {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if attempts > 1 {
            maybe_created = Some(lease.id);
        }
        let responses = created.op_responses();
        let (my_rev, first) = if created.succeeded() {
            (revision(&created), first_kv_revision(&created, 1))
        } else {
            let existing = get_kvs(&responses, 0)
                .first()
                .filter(|kv| kv.lease() == lease.id)
                .map(etcd_client::KeyValue::create_revision);
            match existing {
                // Ours from an earlier attempt of this acquire whose answer
                // was lost: keep it, and its place in the queue.
                Some(rev) if maybe_created == Some(lease.id) => (
                    rev,
                    get_kvs(&responses, 1)
                        .first()
                        .map(|kv| kv.create_revision()),
                ),
                // An earlier acquire of this name whose delete did not get
                // through. Remove it and queue afresh, so the fencing
                // token is new.
                _ => {
                    contender.withdraw().await?;
                    quick_restarts += 1;
                    continue;
                }
            }
        };
        maybe_created = None;
        contender.set_check(Check::CreateRevision(my_rev));
        if first == Some(my_rev) {
            if lease.is_lost() {
                contender.withdraw().await?;
                quick_restarts += 1;
                continue;
            }
            return Ok((contender.into_held(&request.name)?, my_rev));
        }
        if request.wait == Wait::TryOnce {
            contender.withdraw().await?;
            return Err(request.would_block(&backend.describe()));
        }
        match wait_for_turn(core, &key, &pfx, my_rev, lease.id, &lease).await? {
            Turn::Ours => return Ok((contender.into_held(&request.name)?, my_rev)),
            Turn::LeaseLost => {
                // Our key is gone or about to go with the lease; queue again
                // on a new lease. If the delete does not get through, the
                // lease we gave up on takes the key with it (the keep-alive
                // task revokes it as soon as a member takes the request).
                match contender.withdraw().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Unavailable && lease.is_lost() => {
                        contender.disarm();
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

enum Turn {
    Ours,
    LeaseLost,
}

/// Waits until no key created before ours is left under `pfx`, checking each
/// time that our own key still exists on our lease (etcd 3.4 would otherwise
/// hand a lock to a waiter whose lease expired, etcd issue 9921).
///
/// When the key we wait on was the only one ahead, its delete event ends the
/// wait without another read, provided the keep-alive proves our lease (and
/// so our key) still alive at the server: a handoff then costs the release's
/// write and the watch event, nothing more.
async fn wait_for_turn(
    core: &Core,
    key: &[u8],
    pfx: &[u8],
    my_rev: i64,
    lease_id: i64,
    lease: &crate::core::Lease,
) -> Result<Turn> {
    loop {
        let txn = Txn::new().and_then([
            TxnOp::get(key.to_vec(), Some(GetOptions::new().with_keys_only())),
            TxnOp::get(
                pfx.to_vec(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_max_create_revision(my_rev - 1)
                        .with_keys_only()
                        .with_limit(1),
                ),
            ),
        ]);
        let looked = match core.txn("checking the lock queue", &txn).await {
            Ok(looked) => looked,
            // Our key keeps our place while the lease lives: ride out a
            // server restart or an election instead of failing the waiter.
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                if lease.is_lost() {
                    return Ok(Turn::LeaseLost);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let responses = looked.op_responses();
        let mine = get_kvs(&responses, 0).first().cloned();
        match mine {
            Some(kv) if kv.create_revision() == my_rev && kv.lease() == lease_id => {}
            _ => return Ok(Turn::LeaseLost),
        }
        if lease.is_lost() {
            return Ok(Turn::LeaseLost);
        }
        let Some(ahead) = get_kvs(&responses, 1).first().cloned() else {
            return Ok(Turn::Ours);
        };
        // `more` is false when the key ahead was the only one created before
        // ours: keys created later have higher revisions, so once it goes
        // nobody is left ahead of us.
        let only_one_ahead = !more_keys(&responses, 1);
        match until_deleted(
            core,
            ahead.key(),
            ahead.create_revision(),
            revision(&looked),
            lease,
        )
        .await?
        {
            // Our key was there when we looked and lives with our lease: the
            // turn is ours without reading the queue again (saves a round
            // trip on every handoff).
            Watched::Deleted if only_one_ahead && lease.surely_alive() => return Ok(Turn::Ours),
            Watched::Deleted => {}
            Watched::Retry => tokio::time::sleep(RETRY_PAUSE).await,
            Watched::LeaseLost => return Ok(Turn::LeaseLost),
        }
    }
}

/// `WithFirstCreate`: the oldest key of the range.
fn first_created() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_keys_only()
        .with_limit(1)
}

pub(crate) fn revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

pub(crate) fn get_kvs(responses: &[TxnOpResponse], index: usize) -> &[etcd_client::KeyValue] {
    match responses.get(index) {
        Some(TxnOpResponse::Get(get)) => get.kvs(),
        _ => &[],
    }
}

/// Whether the range read at `index` had more keys than its limit returned.
fn more_keys(responses: &[TxnOpResponse], index: usize) -> bool {
    match responses.get(index) {
        Some(TxnOpResponse::Get(get)) => get.more(),
        _ => true,
    }
}

fn first_kv_revision(response: &TxnResponse, index: usize) -> Option<i64> {
    get_kvs(&response.op_responses(), index)
        .first()
        .map(|kv| kv.create_revision())
}
