//! `layout=tooz`: the key layout of OpenStack tooz's etcd3 driver.
//!
//! Key `/tooz/locks<name>` (no separator), value 16 random bytes, attached to
//! our lease, created only if absent. Release deletes the key only while it
//! still holds our value. Where tooz polls once a second, waiters here watch
//! the key for its delete (release or lease expiry) and then try again.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use locks_core::{
    Backend, Error, ErrorKind, LocalTurn, LockName, LockRequest, LockState, Result, Wait,
};

use crate::core::{Check, Core, OwnedKey, is_lease_not_found};
use crate::held::{Contender, EtcdHeld};
use crate::mutex::{get_kvs, revision};
use crate::wait::{RETRY_PAUSE, Watched, until_deleted};

const MAX_QUICK_RESTARTS: u32 = 5;

pub(crate) fn key_of(core: &Core, name: &str) -> Vec<u8> {
    let mut key = core.prefix.clone();
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) async fn acquire(
    core: &Arc<Core>,
    backend: &dyn Backend,
    request: &LockRequest,
    local: LocalTurn<LockName>,
) -> Result<(EtcdHeld, i64)> {
    let key = key_of(core, request.name.as_str());
    let value = uuid::Uuid::new_v4().as_bytes().to_vec();
    let mut contender = Contender::new(Arc::clone(core), local);
    let mut quick_restarts = 0;
    let mut waited = false;
    let ride_out = matches!(request.wait, Wait::Timeout(_));
    loop {
        if quick_restarts > MAX_QUICK_RESTARTS {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "etcd at {}: gave up acquiring lock `{}` after {MAX_QUICK_RESTARTS} restarts \
                     (the lease kept expiring or a key of ours kept reappearing)",
                    core.endpoints, request.name
                ),
            ));
        }
        let lease = match core.lease().await {
            Ok(lease) => lease,
            // A waiter with a timeout rides out an outage until its timeout
            // (see mutex.rs).
            Err(e) if ride_out && e.kind() == ErrorKind::Unavailable => {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        contender.arm(OwnedKey {
            key: key.clone(),
            check: Check::Value(value.clone()),
            lease: Arc::clone(&lease),
        });
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let tried = match core.txn("creating a lock key", &txn).await {
            Ok(tried) => tried,
            // A waiter already in line (or one with a timeout) rides out a
            // server restart while its lease lives; a first attempt without
            // a timeout reports the outage (after the failover of `call`).
            Err(e)
                if e.kind() == ErrorKind::Unavailable
                    && (waited || ride_out)
                    && !lease.is_lost() =>
            {
                // The put may have been applied before the connection broke:
                // stay armed (the check is our value), so a cancellation
                // during the pause deletes the key, and the next attempt
                // finds it as our own stale key.
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) if is_lease_not_found(&e) => {
                lease.state.set(LockState::Lost);
                contender.disarm();
                quick_restarts += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if tried.succeeded() {
            if lease.is_lost() {
                contender.withdraw().await?;
                quick_restarts += 1;
                continue;
            }
            let rev = revision(&tried);
            return Ok((contender.into_held(&request.name)?, rev));
        }
        // Somebody holds the key; none of ours exists.
        contender.disarm();
        let responses = tried.op_responses();
        let holder = get_kvs(&responses, 0).first().cloned();
        if let Some(mine) = holder.as_ref().filter(|kv| kv.value() == value.as_slice()) {
            // Our value: an earlier attempt of this acquire was applied but
            // its answer lost. The key is ours: we hold the lock.
            let rev = mine.create_revision();
            contender.arm(OwnedKey {
                key: key.clone(),
                check: Check::Value(value.clone()),
                lease: Arc::clone(&lease),
            });
            if mine.lease() != lease.id || lease.is_lost() {
                contender.withdraw().await?;
                quick_restarts += 1;
                continue;
            }
            return Ok((contender.into_held(&request.name)?, rev));
        }
        if let Some(stale) = holder.as_ref().filter(|kv| kv.lease() == lease.id) {
            // Ours, from an earlier acquire whose delete did not get through.
            contender.arm(OwnedKey {
                key: key.clone(),
                check: Check::CreateRevision(stale.create_revision()),
                lease: Arc::clone(&lease),
            });
            contender.withdraw().await?;
            quick_restarts += 1;
            continue;
        }
        if request.wait == Wait::TryOnce {
            return Err(request.would_block(&backend.describe()));
        }
        let Some(holder) = holder else {
            // Released between the compare and the read; try again.
            continue;
        };
        waited = true;
        match until_deleted(
            core,
            &key,
            holder.create_revision(),
            revision(&tried),
            &lease,
        )
        .await?
        {
            Watched::Deleted | Watched::LeaseLost => {}
            Watched::Retry => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}
