//! The members of the cluster, one etcd client each, and failover between them.
//!
//! # Why our own rotation, not etcd-client's balancing
//! etcd-client 0.21 puts every endpoint into one tonic balance channel
//! (`Channel::balance_channel`, tower's power-of-two-choices over a
//! `Reconnect` service per endpoint). tonic's `Reconnect`
//! (`tonic-0.14/src/transport/channel/service/reconnect.rs`) reports itself
//! *ready* after a failed connect and hands the stored connect error to the
//! next call routed to it (so a lazy channel never hangs), and the balancer
//! routes by load, not by health: a request that lands on a dead member fails
//! with `tcp connect error` while live members sit idle, and nothing retries
//! it. Requests already sent on the connection of a member that dies fail
//! with a transport error too. Patching that balancer (health-aware
//! readiness, retries of requests that may have been applied) would mean
//! forking tonic's channel and etcd-client's caller; etcd's own Go client
//! solves it above gRPC, with retries that know which requests are safe to
//! repeat. We do the same here, where that knowledge lives: every request of
//! this crate is safe to repeat (creates are conditional on the key being
//! absent and recognise their own key, deletes are conditional, keep-alives
//! and revokes are idempotent, a lease granted twice leaves one that expires
//! unused), so [`Members::call`] runs a request on one member and, when it
//! fails for a transport reason or takes too long, runs it again on the next
//! member, within the request's deadline.
//!
//! Each member gets a client of its own (a balance channel over that one
//! endpoint), connected on first use. All requests go to the *current*
//! member, so a healthy cluster sees one connection per client; a failure
//! moves the current member on to the next one. Requests carry etcd's
//! require-leader flag, so a member cut off from the quorum answers "no
//! leader" at once (and cancels our watches) instead of holding requests
//! until its own timeout.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Pause between two rounds over every member that all failed, so that a
/// cluster in an election or a restarting member is not hammered.
pub(crate) const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// The shortest time one attempt on one member gets before the next member
/// is tried (a healthy member on a loaded machine answers well within it).
const MIN_ATTEMPT: Duration = Duration::from_millis(300);

/// One member: its address, its client, and what went wrong with it last.
struct Member {
    endpoint: String,
    url: String,
    client: OnceCell<Client>,
    /// The last failure, cleared by a success.
    trouble: Mutex<Option<String>>,
}

/// How a request on the members ended, when it did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error that another member would give
    /// too (permission denied, lease not found, ...).
    Answer(etcd_client::Error),
    /// No member could serve the request before its deadline; the text says
    /// what each member did.
    Unreachable(String),
    /// Every member refused the TLS handshake over a certificate (wrong CA,
    /// expired, a host name it does not name): the text says which, per member.
    Certificate(String),
}

/// Every member of the cluster, and which one requests go to.
pub(crate) struct Members {
    members: Vec<Member>,
    current: AtomicUsize,
    /// Tells streams on a member (watches) that requests moved on from it.
    moved: tokio::sync::watch::Sender<usize>,
    options: ConnectOptions,
    /// Bounds one attempt on one member while others are left to try.
    attempt: Duration,
}

impl Members {
    /// Members for `urls` (`endpoints` are the same, as users wrote them).
    /// Connects nothing yet.
    pub(crate) fn new(
        endpoints: &[String],
        urls: Vec<String>,
        options: ConnectOptions,
        timeout: Duration,
    ) -> Members {
        let members = endpoints
            .iter()
            .zip(urls)
            .map(|(endpoint, url)| Member {
                endpoint: endpoint.clone(),
                url,
                client: OnceCell::new(),
                trouble: Mutex::new(None),
            })
            .collect::<Vec<_>>();
        // With several members, leave time for at least three attempts.
        let attempt = if members.len() > 1 {
            (timeout / 3).max(MIN_ATTEMPT).min(timeout)
        } else {
            timeout
        };
        Members {
            members,
            current: AtomicUsize::new(0),
            moved: tokio::sync::watch::Sender::new(0),
            options,
            attempt,
        }
    }

    /// How many members there are.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The member requests go to now.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.members.len()
    }

    /// The client of member `i`, connecting it on first use.
    pub(crate) async fn client(&self, i: usize) -> Result<Client, etcd_client::Error> {
        let member = &self.members[i];
        member
            .client
            .get_or_try_init(|| Client::connect([member.url.as_str()], Some(self.options.clone())))
            .await
            .cloned()
    }

    /// Member `i` served a request.
    pub(crate) fn succeeded(&self, i: usize) {
        *self.members[i]
            .trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Member `i` failed for a transport reason: remember why and, if it is
    /// still the current member, move on to the next one.
    pub(crate) fn failed(&self, i: usize, why: String) {
        let next = (i + 1) % self.members.len();
        let moving = self.current.load(Ordering::Relaxed) == i;
        if moving {
            tracing::warn!(
                target: "locks::failover",
                backend = "etcd",
                from = %self.members[i].url,
                to = %self.members[next].url,
                reason = %why,
                "an etcd member failed: requests move to the next member"
            );
        }
        *self.members[i]
            .trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
        if self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.moved.send_replace(next);
        }
    }

    /// Resolves once requests no longer go to member `i` (a request or a
    /// keep-alive failed on it). A stream opened on `i` (a watch) may be
    /// stuck on a connection that no longer carries anything: its owner
    /// opens it again on the current member.
    pub(crate) async fn moved_from(&self, i: usize) {
        let mut moved = self.moved.subscribe();
        // The sender lives as long as `self`: `wait_for` fails only then.
        let _ = moved.wait_for(|&current| current != i).await;
    }

    /// What is wrong with the cluster as far as the last requests saw:
    /// `None` while some member served its last request.
    pub(crate) fn outage(&self) -> Option<String> {
        let troubles: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                m.trouble
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|t| format!("{}: {t}", m.endpoint))
            })
            .collect::<Option<_>>()?;
        Some(troubles.join("; "))
    }

    /// Runs `op` on the current member and, while it fails for a transport
    /// reason or takes longer than one attempt may, on the next members, in
    /// rounds, until `deadline`. Answers that every member would give alike
    /// end it at once.
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Instant, mut op: F) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempts = 0usize;
        let mut seen: Vec<Option<String>> = vec![None; self.members.len()];
        let mut refused = vec![false; self.members.len()];
        loop {
            let i = self.current();
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = self.attempt.min(left);
            let attempt = async {
                let client = self.client(i).await?;
                op(client).await
            };
            match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(value)) => {
                    self.succeeded(i);
                    return Ok(value);
                }
                Ok(Err(e)) if !is_transient(&e) => return Err(Failure::Answer(e)),
                Ok(Err(e)) => {
                    let why = match certificate_problem(&e) {
                        Some(problem) => {
                            refused[i] = true;
                            problem
                        }
                        None => describe(&e),
                    };
                    seen[i] = Some(why.clone());
                    self.failed(i, why);
                }
                Err(_) => {
                    // An attempt cut short by the deadline says less than
                    // what the member did before.
                    if seen[i].is_none() || !limit.is_zero() {
                        seen[i] = Some(format!("no answer within {limit:?}"));
                    }
                    self.failed(i, format!("no answer within {limit:?}"));
                }
            }
            attempts += 1;
            let now = Instant::now();
            // A certificate refused by every member will not be accepted later.
            let all_refused = refused.iter().all(|r| *r);
            if now >= deadline || all_refused {
                let report = self
                    .members
                    .iter()
                    .zip(seen)
                    .map(|(m, why)| {
                        format!(
                            "{}: {}",
                            m.endpoint,
                            why.as_deref().unwrap_or("not tried (no time left)")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(if all_refused {
                    Failure::Certificate(report)
                } else {
                    Failure::Unreachable(report)
                });
            }
            if attempts.is_multiple_of(self.members.len()) {
                tokio::time::sleep_until((now + ROUND_PAUSE).min(deadline)).await;
            }
        }
    }
}

impl Members {
    /// Revokes lease `id` from a thread of its own, with a runtime and
    /// clients of its own (so it works from `Drop`, inside or outside a
    /// runtime, and while that runtime shuts down), trying the members in
    /// turn; waits for it at most `limit`.
    pub(crate) fn revoke_blocking(&self, id: i64, limit: Duration) {
        let urls: Vec<String> = (0..self.members.len())
            .map(|k| {
                self.members[(self.current() + k) % self.members.len()]
                    .url
                    .clone()
            })
            .collect();
        let options = self.options.clone();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let revoking = std::thread::Builder::new()
            .name("locks-etcd-revoke".to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    let give_up = Instant::now() + limit;
                    for url in urls {
                        let left = give_up.saturating_duration_since(Instant::now());
                        let revoked = tokio::time::timeout(left, async {
                            let client = Client::connect([url], Some(options.clone())).await?;
                            client.lease_client().revoke(id).await
                        })
                        .await;
                        match revoked {
                            Ok(Ok(_)) => break,
                            Ok(Err(e)) if !is_transient(&e) => break,
                            _ if Instant::now() >= give_up => break,
                            _ => {}
                        }
                    }
                });
                let _ = done.send(());
            });
        if revoking.is_ok() {
            // The thread ends by itself within `limit`; do not wait longer.
            let _ = finished.recv_timeout(limit + Duration::from_millis(100));
        }
    }
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field(
                "endpoints",
                &self
                    .members
                    .iter()
                    .map(|m| m.endpoint.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("current", &self.current())
            .finish()
    }
}

/// gRPC status codes, as numbers (tonic is not a direct dependency).
mod code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const INTERNAL: i32 = 13;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// Whether `e` is about reaching this member (connection refused or broken,
/// no leader, an election, a timeout inside the server) rather than an answer
/// every member would give.
pub(crate) fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("lease not found") || message.contains("compacted") {
                return false;
            }
            matches!(
                status.code() as i32,
                code::CANCELLED
                    | code::UNKNOWN
                    | code::DEADLINE_EXCEEDED
                    | code::RESOURCE_EXHAUSTED
                    | code::ABORTED
                    | code::INTERNAL
                    | code::UNAVAILABLE
            )
        }
        E::TransportError(_)
        | E::IoError(_)
        | E::LeaseKeepAliveError(_)
        | E::WatchError(_)
        | E::EndpointError(_) => true,
        _ => false,
    }
}

/// The certificate problem that made a TLS handshake fail, if that is what `e` is.
#[cfg(feature = "tls")]
fn certificate_problem(e: &etcd_client::Error) -> Option<String> {
    use locks_core::tls::certificate_problem as find;
    // etcd-client 0.21 `src/error.rs` has `impl std::error::Error for Error {}`
    // with no `source`, and its `Display` says only "transport error: …" /
    // "grpc request error: …": a refused certificate looks like any
    // unreachable member. The cause is still there one level down (a failed
    // handshake is a `tonic::Status` whose source is tonic's transport error
    // with hyper's, the io error's and rustls's below it), so we start from
    // the variant's payload. A workaround here rather than a patched
    // etcd-client: adding `source` upstream changes nothing we could not
    // reach, and a fork would have to follow every etcd-client release.
    match e {
        etcd_client::Error::GRpcStatus(status) => find(status),
        etcd_client::Error::TransportError(transport) => find(transport),
        other => find(other),
    }
}

#[cfg(not(feature = "tls"))]
fn certificate_problem(_: &etcd_client::Error) -> Option<String> {
    None
}

/// A short text for a member's failure: the gRPC message without the
/// metadata tonic adds to its `Display`.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let mut text = status.message().to_owned();
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text = format!("{text}: {cause_text}");
                }
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}
