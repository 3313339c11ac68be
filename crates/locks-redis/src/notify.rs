//! Release notices: one connection per backend, subscribed to the release
//! channel of every name a task of the backend waits for.
//!
//! A waiter holds a [`Subscription`]; every event on its channel bumps a
//! counter it watches: a release published there, the subscription being
//! confirmed by the server, and any reconnect (after which a release may
//! have gone unheard). Each bump sends the waiter to look at the key again,
//! so nothing published after the waiter subscribed can be missed.
//!
//! The connection speaks RESP3, so pushed messages arrive on an ordinary
//! multiplexed connection (no extra stream dependency); it follows the
//! master: when the command connection moves to a new master (a failover),
//! or this one breaks, it reconnects and subscribes again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::conn::{Conn, Failure};

#[derive(Default)]
struct Channel {
    waiters: usize,
    events: Option<watch::Sender<u64>>,
    /// The server confirmed the subscription on the current connection.
    live: bool,
}

#[derive(Default)]
struct Shared {
    channels: HashMap<String, Channel>,
}

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

/// The subscriber of one backend.
pub(crate) struct Notifier {
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::UnboundedSender<Command>,
}

/// A waiter's interest in one channel; dropping it unsubscribes (when it was
/// the last one).
pub(crate) struct Subscription {
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::UnboundedSender<Command>,
    channel: String,
    events: watch::Receiver<u64>,
}

impl Subscription {
    /// Resolves at the next event on the channel (see the module docs).
    ///
    /// Cancel safe.
    pub(crate) async fn changed(&mut self) {
        if self.events.changed().await.is_err() {
            // The notifier is gone (backend closing): no more events.
            std::future::pending::<()>().await;
        }
    }

    /// Marks every event so far as seen.
    pub(crate) fn mark_seen(&mut self) {
        self.events.borrow_and_update();
    }

    /// Whether the server confirmed the subscription (so a release of ours
    /// will be heard).
    pub(crate) fn is_live(&self) -> bool {
        lock(&self.shared)
            .channels
            .get(&self.channel)
            .is_some_and(|c| c.live)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(channel) = shared.channels.get_mut(&self.channel) {
            channel.waiters -= 1;
            if channel.waiters == 0 {
                shared.channels.remove(&self.channel);
                let _ = self
                    .commands
                    .send(Command::Unsubscribe(std::mem::take(&mut self.channel)));
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notifier {
    /// Starts the subscriber task on `handle`; it ends when the notifier is dropped.
    pub(crate) fn start(conn: Arc<Conn>, handle: &Handle) -> Notifier {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (commands, received) = mpsc::unbounded_channel();
        handle.spawn(run(conn, Arc::clone(&shared), received));
        Notifier { shared, commands }
    }

    /// Subscribes to `channel`.
    pub(crate) fn subscribe(&self, channel: &str) -> Subscription {
        let mut shared = lock(&self.shared);
        let entry = shared.channels.entry(channel.to_owned()).or_default();
        entry.waiters += 1;
        let events = match &entry.events {
            Some(events) => events.subscribe(),
            None => {
                let (events, rx) = watch::channel(0);
                entry.events = Some(events);
                let _ = self.commands.send(Command::Subscribe(channel.to_owned()));
                rx
            }
        };
        Subscription {
            shared: Arc::clone(&self.shared),
            commands: self.commands.clone(),
            channel: channel.to_owned(),
            events,
        }
    }
}

/// Bumps `channel`'s counter (or every channel's for `None`); with `live`,
/// records whether the subscription is confirmed.
fn bump(shared: &Mutex<Shared>, channel: Option<&str>, live: Option<bool>) {
    let mut shared = lock(shared);
    let touch = |c: &mut Channel| {
        if let Some(live) = live {
            c.live = live;
        }
        if let Some(events) = &c.events {
            events.send_modify(|n| *n += 1);
        }
    };
    match channel {
        Some(name) => {
            if let Some(c) = shared.channels.get_mut(name) {
                touch(c);
            }
        }
        None => shared.channels.values_mut().for_each(touch),
    }
}

/// The subscriber task: connect, subscribe to every channel asked for,
/// forward messages, reconnect on failure or a new master.
async fn run(
    conn: Arc<Conn>,
    shared: Arc<Mutex<Shared>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut master = conn.generation.subscribe();
    let mut pause = Duration::from_millis(50);
    'connect: loop {
        // Nothing to listen for: wait for the first subscription (or the end).
        if lock(&shared).channels.is_empty() {
            match commands.recv().await {
                Some(Command::Subscribe(_)) => {}
                Some(Command::Unsubscribe(_)) => continue,
                None => return,
            }
        }
        master.borrow_and_update();
        let (pushes_tx, mut pushes) = mpsc::unbounded_channel();
        let mut connection = match conn.connect_master(Some(pushes_tx)).await {
            Ok((_, connection)) => connection,
            Err(Failure::Retry(_) | Failure::Fatal(_)) => {
                // Waiters look at their keys again on their own schedule;
                // tell them no notice can come for now.
                bump(&shared, None, Some(false));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = master.changed() => {}
                }
                pause = (pause * 2).min(Duration::from_secs(1));
                continue 'connect;
            }
        };
        pause = Duration::from_millis(50);
        // Drain commands queued meanwhile: the channel table is the truth.
        while commands.try_recv().is_ok() {}
        let names: Vec<String> = lock(&shared).channels.keys().cloned().collect();
        if !names.is_empty() {
            if connection.subscribe(&names).await.is_err() {
                continue 'connect;
            }
            for name in &names {
                bump(&shared, Some(name), Some(true));
            }
        }
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Subscribe(name)) => {
                        if connection.subscribe(&name).await.is_err() {
                            bump(&shared, None, Some(false));
                            continue 'connect;
                        }
                        bump(&shared, Some(&name), Some(true));
                    }
                    Some(Command::Unsubscribe(name)) => {
                        // The channel may have been asked for again meanwhile.
                        if !lock(&shared).channels.contains_key(&name)
                            && connection.unsubscribe(&name).await.is_err()
                        {
                            bump(&shared, None, Some(false));
                            continue 'connect;
                        }
                    }
                    None => return,
                },
                push = pushes.recv() => match push {
                    Some(push) => match push.kind {
                        redis::PushKind::Message => {
                            if let Some(redis::Value::BulkString(name)) = push.data.first() {
                                bump(&shared, Some(&String::from_utf8_lossy(name)), None);
                            }
                        }
                        redis::PushKind::Disconnection => {
                            bump(&shared, None, Some(false));
                            continue 'connect;
                        }
                        _ => {}
                    },
                    None => {
                        bump(&shared, None, Some(false));
                        continue 'connect;
                    }
                },
                _ = master.changed() => {
                    // The command connection moved (a failover, a restart):
                    // follow it, so releases published on the new master are heard.
                    bump(&shared, None, Some(false));
                    continue 'connect;
                }
            }
        }
    }
}
