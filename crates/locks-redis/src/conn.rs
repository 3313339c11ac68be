//! The connection to the Redis master: found directly or through the
//! sentinels, replaced when it breaks or the master changes, every request
//! bounded and retried within its bound.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use locks_core::{Error, ErrorKind, Result};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Address, Credentials, RedisConfig, Server};

/// Pause before trying again after a failed request or connect.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why getting a connection failed.
pub(crate) enum Failure {
    /// Worth trying again (server down, failover in progress); what happened.
    Retry(String),
    /// Trying again cannot help (refused credentials, unknown database).
    Fatal(Error),
}

/// The master connection and how to replace it.
pub(crate) struct Conn {
    pub(crate) config: RedisConfig,
    /// For messages: where the backend points, without credentials.
    pub(crate) describe: String,
    /// Bounds every request, reconnecting included.
    pub(crate) timeout: Duration,
    /// Bounds one attempt of a request (connecting and the request itself):
    /// a quarter of the lock timeout at most, so a frozen master is given
    /// up on, and the sentinels asked again, in time for a refresh.
    attempt: Duration,
    current: Mutex<Option<(u64, MultiplexedConnection, Address)>>,
    connecting: tokio::sync::Mutex<()>,
    /// Counts connections made; the notifier follows it to move its
    /// subscriptions to a new master.
    pub(crate) generation: watch::Sender<u64>,
    /// The sentinel that answered last, asked first next time.
    first_sentinel: AtomicUsize,
    /// What the last failed request met, while no request has succeeded since.
    outage: Mutex<Option<String>>,
}

impl Conn {
    pub(crate) fn new(config: RedisConfig) -> Conn {
        let timeout = config.effective_request_timeout();
        let attempt = timeout.min(config.lock_timeout / 4);
        Conn {
            attempt,
            describe: config.describe(),
            config,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            generation: watch::Sender::new(0),
            first_sentinel: AtomicUsize::new(0),
            outage: Mutex::new(None),
        }
    }

    /// What is down when the last request failed on every try; `None` once a
    /// request succeeded since.
    pub(crate) fn outage(&self) -> Option<String> {
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_outage(&self, what: Option<String>) {
        *self.outage.lock().unwrap_or_else(PoisonError::into_inner) = what;
    }

    /// Runs one request (`op` on the master connection), reconnecting (and
    /// asking the sentinels again) and repeating it after a transport error,
    /// a timeout or an answer that says the server is no (longer a) master,
    /// within the request timeout. `op` must be safe to repeat.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] naming what happened when no attempt got an
    /// answer in time; [`ErrorKind::PermissionDenied`] for refused
    /// credentials; other server errors as [`ErrorKind::Io`].
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last;
        loop {
            let attempt = (Instant::now() + self.attempt).min(deadline);
            match tokio::time::timeout_at(attempt, self.get()).await {
                Ok(Ok((generation, connection, address))) => {
                    match tokio::time::timeout_at(attempt, op(connection)).await {
                        Ok(Ok(value)) => {
                            self.set_outage(None);
                            return Ok(value);
                        }
                        Ok(Err(e)) if retryable(&e) => {
                            last = format!("{address}: {}", describe_error(&e));
                            self.invalidate(generation);
                        }
                        Ok(Err(e)) => return Err(self.map_error(what, &e)),
                        Err(_) => {
                            last = format!("{address}: no answer within {:?}", self.attempt);
                            self.invalidate(generation);
                        }
                    }
                }
                Ok(Err(Failure::Retry(why))) => last = why,
                Ok(Err(Failure::Fatal(e))) => return Err(e),
                Err(_) => last = format!("connecting took longer than {:?}", self.attempt),
            }
            let now = Instant::now();
            if now + RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        self.set_outage(Some(last.clone()));
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "redis at {}: {what} failed within {:?}: {last}",
                self.describe, self.timeout
            ),
        ))
    }

    /// The current master connection, connecting (through the sentinels)
    /// when there is none.
    async fn get(&self) -> std::result::Result<(u64, MultiplexedConnection, Address), Failure> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let (address, connection) = self.connect_master(None).await?;
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        if generation > 1 {
            tracing::warn!(
                target: "locks::failover",
                backend = "redis",
                master = %address,
                generation,
                "connected to the Redis master anew, after a broken connection or a failover"
            );
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((generation, connection.clone(), address.clone()));
        Ok((generation, connection, address))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection, Address)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets connection `generation` (it failed); the next request connects anew.
    fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _, _)| *g == generation) {
            *current = None;
        }
    }

    /// Finds the master and connects to it (with `push` for pushed messages,
    /// which needs RESP3), checking with `ROLE` that it is a master.
    pub(crate) async fn connect_master(
        &self,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> std::result::Result<(Address, MultiplexedConnection), Failure> {
        let address = match &self.config.server {
            Server::Direct(address) => address.clone(),
            Server::Sentinel {
                master_name,
                sentinels,
            } => self.ask_sentinels(master_name, sentinels).await?,
        };
        let config = &self.config;
        let mut connection = self
            .open(
                &address,
                config.credentials.as_ref(),
                config.db,
                config.tls.is_some(),
                push,
            )
            .await
            .map_err(|e| self.connect_failure(&address, &e))?;
        if matches!(config.server, Server::Sentinel { .. }) {
            // Right after a failover a sentinel may still name the old
            // master, now a replica: writes there would fail (or be lost).
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut connection)
                .await
                .map_err(|e| self.connect_failure(&address, &e))?;
            let is_master = matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
                || matches!(role.first(), Some(redis::Value::SimpleString(s)) if s == "master");
            if !is_master {
                return Err(Failure::Retry(format!(
                    "{address}: the sentinels name it as master, but it is not (yet) one"
                )));
            }
        }
        Ok((address, connection))
    }

    /// Asks the sentinels, in turn (the one that answered last first), for
    /// the master's address.
    ///
    /// Not the redis crate's `sentinel` module (1.8.2, `src/sentinel.rs`),
    /// after reading it: its `async_try_all_sentinels` keeps only the last
    /// sentinel's error, so "none answered" could not say what each one did;
    /// its role check opens connections with the crate's default bounds
    /// (1 s connect, 500 ms response) instead of ours; and a connection it
    /// hands out stays on the master it found, so following a failover is
    /// the caller's job either way. This
    /// is one command per sentinel plus `ROLE`, so a workaround of our own
    /// rather than a patched dependency.
    async fn ask_sentinels(
        &self,
        master_name: &str,
        sentinels: &[Address],
    ) -> std::result::Result<Address, Failure> {
        let first = self.first_sentinel.load(Ordering::Relaxed) % sentinels.len();
        let mut report = Vec::with_capacity(sentinels.len());
        let mut refused = 0;
        for i in 0..sentinels.len() {
            let index = (first + i) % sentinels.len();
            let sentinel = &sentinels[index];
            let asked = async {
                let mut connection = self
                    .open(
                        sentinel,
                        self.config.sentinel_credentials.as_ref(),
                        0,
                        self.config.sentinel_tls,
                        None,
                    )
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master_name)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
            };
            let bound = self.config.connect_timeout.min(self.attempt);
            match tokio::time::timeout(bound, asked).await {
                Ok(Ok(Some((host, port)))) => {
                    self.first_sentinel.store(index, Ordering::Relaxed);
                    return Ok(Address::new(host, port));
                }
                Ok(Ok(None)) => {
                    report.push(format!("{sentinel}: knows no master named `{master_name}`"));
                }
                Ok(Err(e)) if is_auth_error(&e) => {
                    refused += 1;
                    report.push(format!(
                        "{sentinel}: refused the sentinel credentials ({})",
                        describe_error(&e)
                    ));
                }
                Ok(Err(e)) => report.push(format!("{sentinel}: {}", describe_error(&e))),
                Err(_) => report.push(format!("{sentinel}: no answer within {bound:?}")),
            }
        }
        let what = format!(
            "no sentinel named the master `{master_name}` (asked {})",
            report.join("; ")
        );
        if refused == sentinels.len() {
            // Every sentinel refused our credentials: asking again cannot help.
            return Err(Failure::Fatal(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "redis at {}: {what}; check sentinel_username and sentinel_password \
                     (tooz sends the URL's credentials to the master only)",
                    self.describe
                ),
            )));
        }
        Err(Failure::Retry(what))
    }

    /// Opens one connection, authenticated and on database `db`.
    async fn open(
        &self,
        address: &Address,
        credentials: Option<&Credentials>,
        db: i64,
        tls: bool,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let mut settings = RedisConnectionInfo::default()
            .set_db(db)
            .set_skip_set_lib_name();
        if let Some(credentials) = credentials {
            if let Some(user) = &credentials.username {
                settings = settings.set_username(user);
            }
            settings = settings.set_password(&credentials.password);
        }
        if push.is_some() {
            settings = settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        let client = self.client(address, settings, tls)?;
        // The crate's default response timeout is 500 ms: far too short for a
        // server under load, and not ours to choose. Every request on the
        // command connection is bounded by `call` (and the sentinels' and
        // `ROLE`'s by their callers), so it gets none: one timer per request
        // instead of two. The subscriber's commands are not sent through
        // `call`: its connection keeps the request timeout as a backstop.
        let mut options = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        if let Some(push) = push {
            options = options
                .set_push_sender(push)
                .set_response_timeout(Some(self.timeout));
        }
        client
            .get_multiplexed_async_connection_with_config(&options)
            .await
    }

    #[cfg_attr(not(feature = "tls"), allow(clippy::unused_self))]
    fn client(
        &self,
        address: &Address,
        settings: RedisConnectionInfo,
        tls: bool,
    ) -> redis::RedisResult<Client> {
        if tls {
            #[cfg(feature = "tls")]
            return crate::tls::client(address, settings, self.config.tls.as_ref());
        }
        let info = ConnectionAddr::Tcp(address.host.clone(), address.port)
            .into_connection_info()?
            .set_redis_settings(settings);
        Client::open(info)
    }

    fn connect_failure(&self, address: &Address, e: &redis::RedisError) -> Failure {
        if is_auth_error(e) {
            Failure::Fatal(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "redis at {}: {address} refused the credentials ({}); check the user name and \
                     password in the URL",
                    self.describe,
                    describe_error(e)
                ),
            ))
        } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
            Failure::Fatal(Error::new(
                ErrorKind::InvalidConfig,
                format!("redis at {}: {}", self.describe, describe_error(e)),
            ))
        } else if e.code() == Some("ERR") && describe_error(e).contains("DB index") {
            Failure::Fatal(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "redis at {}: {address} has no database {} ({})",
                    self.describe,
                    self.config.db,
                    describe_error(e)
                ),
            ))
        } else {
            Failure::Retry(format!("{address}: {}", describe_error(e)))
        }
    }

    fn map_error(&self, what: &str, e: &redis::RedisError) -> Error {
        if e.is_cluster_error() {
            return Error::new(
                ErrorKind::Unsupported,
                format!(
                    "redis at {}: {what}: {} (a Redis Cluster node: Redis Cluster is not \
                     supported; point the URL at a standalone server or at the sentinels)",
                    self.describe,
                    describe_error(e)
                ),
            );
        }
        let kind = if is_auth_error(e) {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::Io
        };
        Error::new(
            kind,
            format!("redis at {}: {what}: {}", self.describe, describe_error(e)),
        )
    }
}

/// Whether a failed request is worth sending again, on a new connection:
/// transport failures, timeouts, and the answers of a server that is not
/// (or no longer, or not yet) a master that serves.
fn retryable(e: &redis::RedisError) -> bool {
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        return true;
    }
    if matches!(
        e.kind(),
        redis::ErrorKind::Server(
            redis::ServerErrorKind::ReadOnly
                | redis::ServerErrorKind::MasterDown
                | redis::ServerErrorKind::BusyLoading
                | redis::ServerErrorKind::TryAgain
        )
    ) {
        return true;
    }
    // A script's write refused by a replica comes back as a script error.
    let text = e.to_string();
    text.contains("READONLY") || text.contains("MASTERDOWN") || text.contains("LOADING")
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    if matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    ) {
        return true;
    }
    let text = e.to_string();
    text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("NOPERM")
        || text.contains("without any password configured")
}

/// A redis error as text. The crate's messages carry no credentials (they
/// name the command and the server's answer).
pub(crate) fn describe_error(e: &redis::RedisError) -> String {
    e.to_string()
}
