//! Why a session store refused or failed an operation.

use std::path::PathBuf;

/// Why a raw session id is not a [`SessionId`](super::SessionId).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    /// An empty id.
    #[error("session id is empty")]
    Empty,
    /// An id longer than the limit.
    #[error("session id is {len_bytes} bytes long, at most {max_bytes} are allowed")]
    TooLong {
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An id with a character outside `[A-Za-z0-9_.:-]`.
    #[error("session id has {ch:?} at byte {at}; only A-Z a-z 0-9 _ - . : are allowed")]
    BadChar {
        /// The first offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Why a session store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A session id that does not parse.
    #[error(transparent)]
    InvalidId(#[from] SessionIdError),
    /// [`SessionStore::save`](super::SessionStore::save) of a record that another writer changed
    /// since it was loaded.
    #[error("session {id} changed since it was loaded: it is at version {stored}, the save expected {expected}")]
    Conflict {
        /// The session.
        id: String,
        /// The version the saved record was loaded at.
        expected: u64,
        /// The version stored now (0: not stored).
        stored: u64,
    },
    /// A database whose schema version this build does not know: written by a newer sprout (or
    /// not by sprout at all). Refused rather than guessed at.
    #[error("session database {path} has schema version {found}; this sprout knows versions 0 to {supported} (upgrade sprout or use another data directory)")]
    UnknownSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build can migrate to.
        supported: i64,
    },
    /// An edit passed to [`SessionStore::update`](super::SessionStore::update) panicked; nothing
    /// was stored.
    #[error("the edit of session {id} panicked; the session was left as it was")]
    EditPanicked {
        /// The session.
        id: String,
    },
    /// A stored record that does not decode.
    #[error("stored session {id} does not decode: {reason}")]
    Corrupt {
        /// The session.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory could not be created.
    #[error("cannot create the session directory {path}: {error}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// An error from SQLite.
    #[error("session database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store was closed, or its connection thread is gone.
    #[error("the session store is closed")]
    Closed,
}
