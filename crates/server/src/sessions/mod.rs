//! Conversation state behind the [`SessionStore`] trait, so that a second replica sees the same
//! sessions: SQLite in the data directory now ([`SqliteSessionStore`]), Redis or PostgreSQL later.
//!
//! Every write is a read-modify-write of one whole record that the store does atomically per id
//! ([`SessionStore::update`], [`SessionStore::append_turn`]), so two concurrent requests of one
//! session never lose each other's turns. A caller that must read, think for a while (generate)
//! and then write back the whole record uses [`SessionStore::save`], which refuses to overwrite
//! a record that changed in between ([`SessionError::Conflict`]).

pub mod error;
mod migrations;
pub mod session;
pub mod sqlite;
pub mod users;

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;

pub use error::{SessionError, SessionIdError};
pub use session::{Role, Session, SessionId, Turn, DEFAULT_HISTORY_LIMIT, MAX_SESSION_ID_BYTES};
pub use sqlite::{IntegrityReport, SqliteSessionStore, SESSIONS_FILE_NAME};
pub use users::{UserId, UserProfile, UserStore};

/// What every store operation returns: a boxed future, so that the trait stays object-safe and
/// usable as `Arc<dyn SessionStore>` without the `async-trait` crate.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SessionError>> + Send + 'a>>;

/// A change to one session, applied by [`SessionStore::update`] while the store holds that
/// session's record exclusively.
pub type SessionEdit = Box<dyn FnOnce(&mut Session) + Send>;

/// Where conversation state lives.
///
/// Every operation on one id is atomic: an [`update`](Self::update) sees the result of every
/// update of the same id that finished before it, and none is lost. Once polled, an operation runs
/// to completion even if its future is dropped.
pub trait SessionStore: Send + Sync {
    /// The session stored under `id`, if any.
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>>;

    /// Applies `edit` to the stored session (a new empty one if there is none) and stores the
    /// result, atomically; returns what was stored. The store keeps the id and creation time,
    /// bumps the version, sets `updated_ms` and trims the history to its limit after `edit`.
    fn update<'a>(&'a self, id: &'a SessionId, edit: SessionEdit) -> StoreFuture<'a, Session>;

    /// Appends `turn` to the session's history (creating the session if needed), keeping only
    /// the store's last `history_limit` turns; returns what was stored.
    fn append_turn<'a>(&'a self, id: &'a SessionId, turn: Turn) -> StoreFuture<'a, Session> {
        self.update(id, Box::new(move |session| session.history.push(turn)))
    }

    /// Stores the whole record if nobody wrote it since it was loaded: its stored version must
    /// still be `session.version` (0 for one never stored), else [`SessionError::Conflict`].
    /// Returns what was stored (version + 1, history trimmed, `updated_ms` set).
    fn save<'a>(&'a self, session: &'a Session) -> StoreFuture<'a, Session>;

    /// Removes the session; whether there was one.
    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, bool>;

    /// How many sessions are stored.
    fn count(&self) -> StoreFuture<'_, u64>;

    /// Removes the sessions last written before `cutoff_ms` (milliseconds since the Unix epoch);
    /// how many were removed.
    fn expire_older_than(&self, cutoff_ms: u64) -> StoreFuture<'_, u64>;

    /// Finishes the operations already submitted, makes them durable and refuses later ones with
    /// [`SessionError::Closed`] (for a graceful shutdown).
    fn close(&self) -> StoreFuture<'_, ()>;
}

/// How a session store behaves: the `[sessions]` part of the server's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// How many messages of history a session keeps (the original kept 6).
    pub history_limit: usize,
    /// When a committed write reaches the disk.
    pub synchronous: Synchronous,
    /// How long a write waits for another process holding the database's write lock.
    pub busy_timeout_ms: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            history_limit: DEFAULT_HISTORY_LIMIT,
            synchronous: Synchronous::Normal,
            busy_timeout_ms: 5_000,
        }
    }
}

/// SQLite's `synchronous` setting, in WAL mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// A commit is in the OS's page cache when it returns: it survives the process being killed
    /// (even with SIGKILL) but the last commits may be lost on power loss or an OS crash; the
    /// database stays consistent either way. No fsync per turn.
    Normal,
    /// A commit is on disk when it returns (an fsync of the WAL per commit): survives power loss.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}
