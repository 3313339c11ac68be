//! [`Locks`]: the client users hold, one backend per scope.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locks_core::{
    Backend, Catalog, CleanReport, Error, ErrorKind, HolderId, LockGuard, LockName, LockRequest,
    LockStatus, MultiGuard, Params, ReentryRegistry, ReleaseObserver, Result, Scope, Wait,
    canonical_order,
};

use tracing::Instrument;

use crate::backends;
use crate::config::{Compat, Config};
use crate::hold;
use crate::lock_metrics::{Metrics, PendingAcquire};
use locks_core::redact_text;

/// A client for the locks of one catalog: renders names, picks the backend of
/// each scope, detects self-deadlock, and takes sets of locks in one order.
///
/// Cheap to clone; clones share backends (one etcd lease, one ZooKeeper
/// session) and the re-entry registry.
#[derive(Clone)]
pub struct Locks {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    prefix: String,
    backends: [Arc<dyn Backend>; 3],
    urls: [String; 3],
    registry: ReentryRegistry,
    /// For each scope, whether its backend records its holders itself: re-entry
    /// is then asked of the backend, and the registry is not used.
    backend_knows_holders: [bool; 3],
    /// For each scope, the narrowest scope served by the same backend: scopes
    /// that share a backend (one `file://` URL for node and global) share
    /// their locks, so re-entry and duplicates are judged across them.
    lock_space: [Scope; 3],
    /// Metric handles, when the configuration asks for metrics.
    metrics: Option<Metrics>,
    warnings: Vec<String>,
    /// The scope each of `warnings` is about, in the same order.
    warning_scopes: Vec<Scope>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Locks");
        d.field("prefix", &self.inner.prefix);
        for scope in Scope::ALL {
            d.field(scope.as_str(), &self.backend(scope).describe());
        }
        d.finish()
    }
}

pub(crate) fn index(scope: Scope) -> usize {
    match scope {
        Scope::Process => 0,
        Scope::Node => 1,
        Scope::Global => 2,
    }
}

impl Locks {
    /// Opens every backend the configuration names. Scopes with the same URL
    /// share one backend instance.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a bad URL, or a backend that cannot
    /// honour the scope it is configured for (naming the key);
    /// [`ErrorKind::InvalidCatalog`] for a catalog that fails to load or lint;
    /// whatever opening a backend reports (unreachable server, unusable directory).
    pub async fn open(config: Config) -> Result<Locks> {
        let catalog = config.catalog.load()?;
        if config.embedded_defaults {
            check_private_dir(&crate::config::default_lock_dir())?;
        }
        let mut opened: HashMap<String, Arc<dyn Backend>> = HashMap::new();
        let mut backends = Vec::with_capacity(3);
        let mut warnings = Vec::new();
        let mut warning_scopes = Vec::new();
        let mut urls = Vec::with_capacity(3);
        for scope in Scope::ALL {
            let url = config.backend_url(scope)?;
            let url = url.as_str();
            let key = format!("backends.{scope}");
            let backend = match opened.get(url) {
                Some(b) => Arc::clone(b),
                None => {
                    let b = backends::open(&key, url).await?;
                    opened.insert(url.to_owned(), Arc::clone(&b));
                    b
                }
            };
            if !backend.capabilities().scopes.contains(&scope) {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "{key} = \"{}\": the {} backend cannot honour the {scope} scope (it serves {}); \
                         use {}",
                        redact_text(url),
                        backend.kind(),
                        backend
                            .capabilities()
                            .scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        match scope {
                            Scope::Process => "memory://",
                            Scope::Node => "file:///path/to/lock/dir",
                            Scope::Global => "etcd://host:2379 or zookeeper://host:2181",
                        }
                    ),
                ));
            }
            // Under OpenStack compatibility a file:// Global backend is the
            // tooz file driver the service itself uses: no surprise to warn of.
            if scope == Scope::Global
                && backend.kind() == "file"
                && config.compat != Compat::Openstack
            {
                let why = if config.embedded_defaults {
                    "no configuration given, so global locks use".to_owned()
                } else {
                    format!("{key} is")
                };
                warnings.push(format!(
                    "{why} {}, which excludes only processes on this host; set {key} to an \
                     etcd:// or zookeeper:// URL for a cluster",
                    backend.describe()
                ));
                warning_scopes.push(scope);
            }
            // Redis replicates asynchronously: say so, as for file:// above,
            // under every compatibility setting (tooz's users have the same risk).
            if scope == Scope::Global && backend.kind() == "redis" {
                warnings.push(format!(
                    "{key} is {}: Redis replicates asynchronously, so a failover can hand a held \
                     lock to a second holder (its guard then reports Lost); guard writes with the \
                     fencing token, or use etcd:// or zookeeper:// where that matters",
                    backend.describe()
                ));
                warning_scopes.push(scope);
            }
            backends.push(backend);
            urls.push(redact_text(url));
        }
        let backends: [Arc<dyn Backend>; 3] = backends
            .try_into()
            .map_err(|_| Error::new(ErrorKind::Internal, "expected one backend per scope"))?;
        let backend_knows_holders = backends.each_ref().map(|b| b.knows_holders());
        let backend_kinds = backends.each_ref().map(|b| b.kind());
        let lock_space = Scope::ALL.map(|scope| {
            let backend = &backends[index(scope)];
            Scope::ALL
                .into_iter()
                .find(|other| Arc::ptr_eq(&backends[index(*other)], backend))
                .unwrap_or(scope)
        });
        let urls: [String; 3] = urls
            .try_into()
            .map_err(|_| Error::new(ErrorKind::Internal, "expected one URL per scope"))?;
        Ok(Locks {
            inner: Arc::new(Inner {
                catalog,
                prefix: config.effective_prefix(),
                backends,
                urls,
                registry: ReentryRegistry::new(),
                backend_knows_holders,
                lock_space,
                warnings,
                warning_scopes,
                metrics: config.metrics.then(|| Metrics::new(backend_kinds)),
            }),
        })
    }

    /// [`Config::discover`] (the `LOCKS_CONFIG` file, or the embedded defaults), then [`open`](Self::open).
    ///
    /// # Errors
    /// As [`Config::discover`] and [`open`](Self::open).
    pub async fn from_env() -> Result<Locks> {
        Self::open(Config::discover(None)?).await
    }

    /// The catalog of declared locks.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The prefix put before every lock name.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The backend serving `scope`.
    pub fn backend(&self, scope: Scope) -> &Arc<dyn Backend> {
        &self.inner.backends[index(scope)]
    }

    /// The URL serving `scope`, with defaults and compatibility rules applied
    /// and any password masked.
    pub fn backend_url(&self, scope: Scope) -> &str {
        &self.inner.urls[index(scope)]
    }

    /// Warnings about the configuration (for example Global scope on a
    /// host-local backend), for the caller to show, without a `warning:`
    /// prefix of their own.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// The [`warnings`](Self::warnings) about `scope`: what a caller about
    /// to take a lock of that scope should show (once), and a caller that
    /// takes none may keep quiet about.
    pub fn warnings_for(&self, scope: Scope) -> impl Iterator<Item = &str> {
        self.inner
            .warnings
            .iter()
            .zip(&self.inner.warning_scopes)
            .filter(move |(_, about)| **about == scope)
            .map(|(warning, _)| warning.as_str())
    }

    /// The request for catalog lock `id` with `params`: name rendered, prefix applied.
    ///
    /// # Errors
    /// [`ErrorKind::UnknownLock`], [`ErrorKind::MissingParameter`],
    /// [`ErrorKind::UnknownParameter`], [`ErrorKind::InvalidName`].
    pub fn request(&self, id: &str, params: &Params) -> Result<LockRequest> {
        let entry = self.inner.catalog.get(id)?;
        let name = entry.render(params)?.with_prefix(&self.inner.prefix)?;
        Ok(LockRequest::new(name, entry.scope).label(id))
    }

    /// The request for a raw `name` in `scope`, prefix applied.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`].
    pub fn raw_request(&self, scope: Scope, name: &str) -> Result<LockRequest> {
        Ok(LockRequest::new(
            LockName::prefixed(&self.inner.prefix, name)?,
            scope,
        ))
    }

    /// Acquires catalog lock `id`, waiting as long as it takes.
    ///
    /// # Errors
    /// Those of [`request`](Self::request) and [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves nothing held or queued.
    pub async fn lock(&self, id: &str, params: &Params) -> Result<LockGuard> {
        self.lock_with(id, params, Wait::Forever).await
    }

    /// Acquires catalog lock `id`, waiting as `wait` says.
    ///
    /// # Errors
    /// Those of [`request`](Self::request) and [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lock_with(&self, id: &str, params: &Params, wait: Wait) -> Result<LockGuard> {
        let request = self.request(id, params)?.wait(wait);
        if let Some(guard) = self.acquire_now(&request) {
            return Ok(guard);
        }
        self.acquire_waiting(request).await
    }

    /// Acquires a raw `name` in `scope` (no catalog entry), waiting as `wait` says.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`], and those of [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lock_name(&self, scope: Scope, name: &str, wait: Wait) -> Result<LockGuard> {
        if let Some(guard) = self.try_acquire_name_now(scope, name) {
            return Ok(guard);
        }
        let request = self.raw_request(scope, name)?.wait(wait);
        if let Some(guard) = self.acquire_now(&request) {
            return Ok(guard);
        }
        self.acquire_waiting(request).await
    }

    /// Acquires one request on the backend of its scope.
    ///
    /// # Errors
    /// [`ErrorKind::WouldDeadlock`] at once when the calling task already holds
    /// the lock through this client; [`ErrorKind::WouldBlock`] for a contended
    /// try-once; [`ErrorKind::Timeout`]; backend errors.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn acquire(&self, request: LockRequest) -> Result<LockGuard> {
        if let Some(guard) = self.acquire_now(&request) {
            return Ok(guard);
        }
        self.acquire_waiting(request).await
    }

    /// Takes the lock of `request` if it is free right now and its backend
    /// can take it on the calling thread, without a runtime and without
    /// waiting (the memory backend can); `None` otherwise, for the caller to
    /// go on with [`acquire`](Self::acquire). Blocking front ends (the C ABI,
    /// [`BlockingLocks`](crate::BlockingLocks)) use it to skip entering the
    /// runtime.
    pub fn try_acquire_now(&self, request: &LockRequest) -> Option<LockGuard> {
        self.acquire_now(request)
    }

    /// [`try_acquire_now`](Self::try_acquire_now) for raw lock `name` in
    /// `scope` (the prefix is put before it), without building a request:
    /// for backends that can take a lock by its name as text (the memory
    /// backend, which then builds no name for a name it served lately).
    /// `None` otherwise, also for names that are not valid (which
    /// [`lock_name`](Self::lock_name) reports).
    pub fn try_acquire_name_now(&self, scope: Scope, name: &str) -> Option<LockGuard> {
        let i = index(scope);
        // The client's own re-entry record needs a request: only backends that
        // keep that record themselves. An empty name is valid text after a
        // prefix, but not a valid name.
        // Metrics and the hold's trace need the request too (its catalog id).
        if !self.inner.backend_knows_holders[i]
            || name.is_empty()
            || self.inner.metrics.is_some()
            || hold::traced()
        {
            return None;
        }
        let backend = &self.inner.backends[i];
        let prefix = self.inner.prefix.as_str();
        if prefix.is_empty() {
            return backend.try_acquire_name_now(name, scope);
        }
        // Prefix and name side by side on the stack: no allocation.
        let mut buf = [0u8; 256];
        let full = buf.get_mut(..prefix.len() + name.len())?;
        let (head, tail) = full.split_at_mut(prefix.len());
        head.copy_from_slice(prefix.as_bytes());
        tail.copy_from_slice(name.as_bytes());
        backend.try_acquire_name_now(std::str::from_utf8(full).ok()?, scope)
    }

    /// The backend's fast path ([`Backend::try_acquire_now`]): the guard if the
    /// lock was free. A lock that is free is not held by the caller, so there
    /// is no re-entry check to make.
    fn acquire_now(&self, request: &LockRequest) -> Option<LockGuard> {
        let i = index(request.scope);
        let mut guard = self.inner.backends[i].try_acquire_now(request)?;
        if !self.inner.backend_knows_holders[i] {
            let space = self.inner.lock_space[i];
            guard.track_in(&self.inner.registry, HolderId::current(), space);
        }
        let metrics = self.inner.metrics.as_ref().map(|metrics| {
            let metrics = metrics.of(request);
            metrics.acquired(Duration::ZERO);
            metrics as Arc<dyn ReleaseObserver>
        });
        hold::watch(&mut guard, request, self.inner.backends[i].kind(), metrics);
        tracing::debug!(
            lock = %request.name,
            id = request.label.as_deref().unwrap_or("-"),
            scope = request.scope.as_str(),
            backend = self.inner.backends[i].kind(),
            outcome = "acquired",
            waited_ms = 0.0,
            token = guard.token(),
            "lock acquired at once"
        );
        Some(guard)
    }

    /// [`acquire`](Self::acquire) after the fast path said no: re-entry
    /// check, then the backend's acquire with its wait.
    ///
    /// Runs in a `locks.acquire` span (debug level: the lock's name, catalog
    /// id, scope, backend kind and wait, and the queue position where the
    /// backend knows it) that ends with one event saying the
    /// outcome, how long it waited and the token. A cancelled acquire ends
    /// its span without that event.
    async fn acquire_waiting(&self, request: LockRequest) -> Result<LockGuard> {
        let i = index(request.scope);
        let backend = &self.inner.backends[i];
        let span = tracing::debug_span!(
            "locks.acquire",
            lock = %request.name,
            id = request.label.as_deref().unwrap_or("-"),
            scope = request.scope.as_str(),
            backend = backend.kind(),
            wait = %request.wait,
            // Backends that know how many contenders are ahead record it
            // (`tracing::Span::current().record("queue_position", n)`).
            queue_position = tracing::field::Empty,
        );
        // Only a subscriber that wants the span pays for the clock.
        let started = (!span.is_disabled()).then(Instant::now);
        let pending = self
            .inner
            .metrics
            .as_ref()
            .map(|metrics| PendingAcquire::new(metrics.of(&request)));
        let mut result: Result<LockGuard> = async {
            let holder = self.check_reentry(&request)?;
            let mut guard = locks_core::acquire(backend.as_ref(), &request).await?;
            if !self.inner.backend_knows_holders[i] {
                let space = self.inner.lock_space[i];
                guard.track_in(&self.inner.registry, holder, space);
            }
            Ok(guard)
        }
        .instrument(span.clone())
        .await;
        let metrics = pending.and_then(|pending| pending.finish(&result));
        if let Ok(guard) = &mut result {
            hold::watch(guard, &request, backend.kind(), metrics);
        }
        if let Some(started) = started {
            let waited_ms = started.elapsed().as_secs_f64() * 1e3;
            match &result {
                Ok(guard) => tracing::debug!(
                    parent: &span,
                    outcome = "acquired",
                    waited_ms,
                    token = guard.token(),
                    "lock acquired"
                ),
                Err(e) => tracing::debug!(
                    parent: &span,
                    outcome = e.kind().as_str(),
                    waited_ms,
                    error = %e,
                    "lock not acquired"
                ),
            }
        }
        result
    }

    /// Fails with [`ErrorKind::WouldDeadlock`] if the caller holds the lock of
    /// `request` through this client; otherwise returns the caller's id.
    fn check_reentry(&self, request: &LockRequest) -> Result<HolderId> {
        let i = index(request.scope);
        if self.inner.backend_knows_holders[i] {
            let me = HolderId::current();
            if self.inner.backends[i].held_by(request, me) {
                return Err(request.would_deadlock());
            }
            return Ok(me);
        }
        self.inner
            .registry
            .check(self.inner.lock_space[i], &request.name)
    }

    /// Acquires a set of locks in the canonical order (sorted by name, then
    /// scope; duplicates taken once), as Cinder's multi-name `synchronized` does.
    /// `wait` bounds the whole set. If any acquire fails, those already taken
    /// are released (last first) before the error is returned.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), for the first lock that fails.
    ///
    /// # Cancel safety
    /// Cancel safe: locks taken so far are released on drop.
    pub async fn lock_many(&self, requests: Vec<LockRequest>, wait: Wait) -> Result<MultiGuard> {
        let mut ordered = canonical_order(requests);
        // Scopes that share a backend share their locks: take such a name once.
        let space = |scope: Scope| self.inner.lock_space[index(scope)];
        ordered.dedup_by(|a, b| a.name == b.name && space(a.scope) == space(b.scope));
        for request in &ordered {
            self.check_reentry(request)?;
        }
        let deadline = match wait {
            // A timeout too large for the clock is no deadline at all.
            Wait::Timeout(d) => Instant::now().checked_add(d).map(|at| (at, d)),
            _ => None,
        };
        let mut guards = Vec::with_capacity(ordered.len());
        for request in ordered {
            let this_wait = match deadline {
                Some((at, total)) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Wait::Timeout(left),
                    _ => {
                        let err = request.timed_out(&self.backend(request.scope).describe(), total);
                        release_all(guards).await;
                        return Err(err);
                    }
                },
                None => wait,
            };
            match self.acquire(request.wait(this_wait)).await {
                Ok(guard) => guards.push(guard),
                Err(e) => {
                    release_all(guards).await;
                    return Err(e);
                }
            }
        }
        Ok(MultiGuard::new(guards))
    }

    /// Who holds catalog lock `id` rendered with `params`, and who waits for it.
    ///
    /// # Errors
    /// Those of [`request`](Self::request) and [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn status(&self, id: &str, params: &Params) -> Result<LockStatus> {
        let request = self.request(id, params)?;
        self.status_of(&request).await
    }

    /// Who holds a raw `name` in `scope` (prefix applied), and who waits for it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`], and those of [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn status_name(&self, scope: Scope, name: &str) -> Result<LockStatus> {
        let request = self.raw_request(scope, name)?;
        self.status_of(&request).await
    }

    /// Who holds the lock of `request`, and who waits for it.
    ///
    /// # Errors
    /// Those of [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn status_of(&self, request: &LockRequest) -> Result<LockStatus> {
        self.backend(request.scope)
            .status(&request.name, request.scope)
            .await
    }

    /// Every lock held or waited for right now, per configured backend: one
    /// entry for each scope whose backend no earlier scope shares (Node and
    /// Global on one lock directory are asked once, as Node).
    ///
    /// # Errors
    /// Each entry carries its backend's answer: [`ErrorKind::Unsupported`]
    /// where a backend cannot list its locks, backend errors otherwise.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn statuses(&self) -> Vec<(Scope, Result<Vec<LockStatus>>)> {
        let mut all = Vec::new();
        for scope in Scope::ALL {
            if self.inner.lock_space[index(scope)] == scope {
                all.push((scope, self.backend(scope).statuses(scope).await));
            }
        }
        all
    }

    /// Removes unheld state of the `scope` backend (lock files, empty lock nodes).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for backends with nothing to clean; backend errors.
    pub async fn clean(&self, scope: Scope) -> Result<CleanReport> {
        self.backend(scope).clean().await
    }
}

/// The embedded default directory lives in a shared temporary directory when
/// `$XDG_RUNTIME_DIR` is unset: refuse one that another user created first.
fn check_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format_args!("checking lock directory {}", dir.display()),
                e,
            ));
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "the default lock directory {} is not a directory owned by this user (uid {me}); remove it, \
                 or set backends.node in a configuration file",
                dir.display()
            ),
        ));
    }
    Ok(())
}

async fn release_all(mut guards: Vec<LockGuard>) {
    while let Some(guard) = guards.pop() {
        // The acquire error is what the caller needs; a failed release of a
        // partial set expires with its lease or session.
        let _ = guard.release().await;
    }
}
