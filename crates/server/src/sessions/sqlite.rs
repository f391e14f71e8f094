//! [`SessionStore`] on one SQLite file in the data directory (`sessions.sqlite3`), in WAL mode.
//!
//! One connection lives on a dedicated thread that runs the operations in the order they were
//! submitted; async callers hand it jobs through a channel and await the reply, so no SQLite call
//! ever blocks a tokio worker. Each write is one `BEGIN IMMEDIATE` transaction (read, modify,
//! write), which takes SQLite's write lock first: writes of one id are atomic within a process
//! (the thread runs one at a time) and across processes sharing the file (the lock), waiting up to
//! `busy_timeout_ms` for the other process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::migrations;
use super::{
    Session, SessionEdit, SessionError, SessionId, SessionStore, SessionsConfig, StoreFuture, Turn,
};

/// The session database's file name inside the data directory.
pub const SESSIONS_FILE_NAME: &str = "sessions.sqlite3";

/// What [`SqliteSessionStore::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityReport {
    /// The output of `PRAGMA integrity_check`: `"ok"` for a sound database.
    pub integrity_check: String,
    /// How many sessions are stored (each of which decoded).
    pub sessions: u64,
}

/// Milliseconds since the Unix epoch, as the store stamps `updated_ms` and `created_ms`.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Message {
    Run(Job),
    Close(oneshot::Sender<Result<(), SessionError>>),
}

/// Sessions in a SQLite database, served by one connection thread.
pub struct SqliteSessionStore {
    /// `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<Message>>>,
    history_limit: usize,
    clock: Clock,
}

impl SqliteSessionStore {
    /// Opens (creating it and the directory if needed) `<data_dir>/sessions.sqlite3` and migrates
    /// its schema. Blocks while doing so: call it at startup, or from `spawn_blocking`.
    pub fn open(data_dir: &Path, config: &SessionsConfig) -> Result<Self, SessionError> {
        std::fs::create_dir_all(data_dir).map_err(|error| SessionError::Dir {
            path: data_dir.to_owned(),
            error,
        })?;
        Self::open_file(&data_dir.join(SESSIONS_FILE_NAME), config)
    }

    /// Opens the database file at `path` (its directory must exist). Blocks like [`Self::open`].
    pub fn open_file(path: &Path, config: &SessionsConfig) -> Result<Self, SessionError> {
        let conn = Connection::open(path)?;
        Self::start(conn, path, config)
    }

    /// A store that lives in memory only and vanishes when dropped (for tests).
    pub fn open_in_memory(config: &SessionsConfig) -> Result<Self, SessionError> {
        let conn = Connection::open_in_memory()?;
        Self::start(conn, Path::new(":memory:"), config)
    }

    /// The same store stamping times from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn start(
        mut conn: Connection,
        path: &Path,
        config: &SessionsConfig,
    ) -> Result<Self, SessionError> {
        conn.busy_timeout(Duration::from_millis(config.busy_timeout_ms))?;
        // WAL: readers never block the writer, and a commit is one append to the log, which a
        // killed process cannot leave half-applied. An in-memory database answers "memory".
        let journal_mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())?;
        let found = migrations::migrate(&mut conn, path)?;
        tracing::info!(
            path = %path.display(),
            journal_mode,
            schema_found = found,
            schema = migrations::current_version(),
            "session store opened"
        );
        let (jobs, inbox) = mpsc::channel();
        thread::Builder::new()
            .name("sprout-sessions".into())
            .spawn(move || serve(conn, inbox))
            .map_err(|error| SessionError::Dir {
                path: path.to_owned(),
                error,
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            history_limit: config.history_limit,
            clock: Arc::new(system_now_ms),
        })
    }

    /// Runs `PRAGMA integrity_check` and decodes every stored session; fails on the first one
    /// that does not decode. Reads the whole database: for tests and repair tools, not startup.
    pub fn check(&self) -> StoreFuture<'_, IntegrityReport> {
        self.run(|conn| {
            let mut lines = Vec::new();
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                lines.push(row.get::<_, String>(0)?);
            }
            let mut sessions = 0;
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM sessions"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                decode(row)?;
                sessions += 1;
            }
            Ok(IntegrityReport {
                integrity_check: lines.join("\n"),
                sessions,
            })
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Message>> {
        // A poisoned lock only means a thread panicked while cloning or taking the sender;
        // the Option inside is still whole.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Hands `job` to the connection thread and awaits its result.
    pub(super) fn run<T, F>(&self, job: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SessionError> + Send + 'static,
    {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job: Job = Box::new(move |conn| {
                // The caller may have gone away; the work is done either way.
                let _ = reply.send(job(conn));
            });
            self.sender()
                .ok_or(SessionError::Closed)?
                .send(Message::Run(job))
                .map_err(|_| SessionError::Closed)?;
            answer.await.map_err(|_| SessionError::Closed)?
        })
    }
}

impl SessionStore for SqliteSessionStore {
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>> {
        let id = id.clone();
        self.run(move |conn| select(conn, &id))
    }

    fn update<'a>(&'a self, id: &'a SessionId, edit: SessionEdit) -> StoreFuture<'a, Session> {
        let id = id.clone();
        let now_ms = (self.clock)();
        let limit = self.history_limit;
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = select(&tx, &id)?;
            let mut session = stored.unwrap_or_else(|| Session::new(id.clone(), now_ms));
            let (version, created_ms) = (session.version, session.created_ms);
            catch_unwind(AssertUnwindSafe(|| edit(&mut session)))
                .map_err(|_| SessionError::EditPanicked { id: id.to_string() })?;
            // The edit may not move the record to another id, nor rewrite its bookkeeping.
            session.id = id;
            session.version = version + 1;
            session.created_ms = created_ms;
            session.updated_ms = now_ms;
            session.truncate_history(limit);
            upsert(&tx, &session)?;
            tx.commit()?;
            Ok(session)
        })
    }

    fn save<'a>(&'a self, session: &'a Session) -> StoreFuture<'a, Session> {
        let mut session = session.clone();
        let now_ms = (self.clock)();
        let limit = self.history_limit;
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<(u64, u64)> = tx
                .prepare_cached("SELECT version, created_ms FROM sessions WHERE id = ?1")?
                .query_row([session.id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let (stored_version, created_ms) = stored.unwrap_or((0, now_ms));
            if stored_version != session.version {
                return Err(SessionError::Conflict {
                    id: session.id.to_string(),
                    expected: session.version,
                    stored: stored_version,
                });
            }
            session.version = stored_version + 1;
            session.created_ms = created_ms;
            session.updated_ms = now_ms;
            session.truncate_history(limit);
            upsert(&tx, &session)?;
            tx.commit()?;
            Ok(session)
        })
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, bool> {
        let id = id.clone();
        self.run(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute([id.as_str()])?;
            Ok(removed > 0)
        })
    }

    fn count(&self) -> StoreFuture<'_, u64> {
        self.run(|conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM sessions")?
                .query_row([], |row| row.get(0))?)
        })
    }

    fn expire_older_than(&self, cutoff_ms: u64) -> StoreFuture<'_, u64> {
        self.run(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM sessions WHERE updated_ms < ?1")?
                .execute([cutoff_ms])?;
            tracing::debug!(removed, cutoff_ms, "expired sessions");
            Ok(removed as u64)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let taken = self
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let Some(jobs) = taken else {
                return Ok(());
            };
            let (reply, answer) = oneshot::channel();
            jobs.send(Message::Close(reply))
                .map_err(|_| SessionError::Closed)?;
            answer.await.map_err(|_| SessionError::Closed)?
        })
    }
}

/// The connection thread: runs jobs in order until closed or every sender is gone.
fn serve(mut conn: Connection, inbox: mpsc::Receiver<Message>) {
    for message in inbox {
        match message {
            Message::Run(job) => {
                // A job that panics drops its reply (its caller sees `Closed`); the connection
                // and every other session stay usable.
                if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                    tracing::error!("a session store job panicked");
                }
            }
            Message::Close(reply) => {
                // Moves the WAL into the main file so the directory holds one self-contained
                // file; closing the connection does the same, this reports errors.
                let result = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(SessionError::from)
                    .and_then(|()| conn.close().map_err(|(_, error)| error.into()));
                let _ = reply.send(result);
                return;
            }
        }
    }
}

const COLUMNS: &str =
    "id, version, history, category, base_category, location, work_type, created_ms, updated_ms";

fn select(conn: &Connection, id: &SessionId) -> Result<Option<Session>, SessionError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"))?;
    let mut rows = stmt.query([id.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode(row)?)),
        None => Ok(None),
    }
}

fn decode(row: &Row<'_>) -> Result<Session, SessionError> {
    let raw_id: String = row.get(0)?;
    let corrupt = |reason: String| SessionError::Corrupt {
        id: raw_id.clone(),
        reason,
    };
    let id = SessionId::parse(&raw_id).map_err(|e| corrupt(e.to_string()))?;
    let history: String = row.get(2)?;
    let history: Vec<Turn> =
        serde_json::from_str(&history).map_err(|e| corrupt(format!("history: {e}")))?;
    Ok(Session {
        id,
        version: row.get(1)?,
        history,
        category: row.get(3)?,
        base_category: row.get(4)?,
        location: row.get(5)?,
        work_type: row.get(6)?,
        created_ms: row.get(7)?,
        updated_ms: row.get(8)?,
    })
}

fn upsert(tx: &Transaction<'_>, session: &Session) -> Result<(), SessionError> {
    let history = serde_json::to_string(&session.history).map_err(|e| SessionError::Corrupt {
        id: session.id.to_string(),
        reason: format!("history: {e}"),
    })?;
    tx.prepare_cached(&format!(
        "INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET
           version = excluded.version, history = excluded.history,
           category = excluded.category, base_category = excluded.base_category,
           location = excluded.location, work_type = excluded.work_type,
           updated_ms = excluded.updated_ms"
    ))?
    .execute(params![
        session.id.as_str(),
        session.version,
        history,
        session.category,
        session.base_category,
        session.location,
        session.work_type,
        session.created_ms,
        session.updated_ms,
    ])?;
    Ok(())
}

fn system_now_ms() -> u64 {
    // A clock before 1970 is a broken host, not a reason to fail a request.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{Role, Synchronous};

    fn pragma(store: &SqliteSessionStore, name: &'static str) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(store.run(move |conn| {
                Ok(conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                    row.get_ref(0)?
                        .as_i64()
                        .map_or_else(|_| row.get::<_, String>(0), |n| Ok(n.to_string()))
                })?)
            }))
            .unwrap()
    }

    #[test]
    fn sessions_file_store_uses_wal_and_the_configured_synchronous() {
        let dir = tempfile::tempdir().unwrap();
        for (synchronous, expected) in [(Synchronous::Normal, "1"), (Synchronous::Full, "2")] {
            let config = SessionsConfig {
                synchronous,
                busy_timeout_ms: 1_234,
                ..SessionsConfig::default()
            };
            let store = SqliteSessionStore::open(dir.path(), &config).unwrap();
            assert_eq!(pragma(&store, "journal_mode"), "wal");
            assert_eq!(pragma(&store, "synchronous"), expected);
            assert_eq!(pragma(&store, "busy_timeout"), "1234");
        }
        assert!(dir.path().join(SESSIONS_FILE_NAME).is_file());
    }

    #[tokio::test]
    async fn sessions_closed_store_refuses_work() {
        let store = SqliteSessionStore::open_in_memory(&SessionsConfig::default()).unwrap();
        let id = SessionId::parse("s").unwrap();
        store
            .append_turn(&id, Turn::new(Role::User, "x", 0))
            .await
            .unwrap();
        store.close().await.unwrap();
        assert!(matches!(store.count().await, Err(SessionError::Closed)));
        assert!(matches!(
            store.append_turn(&id, Turn::new(Role::User, "y", 0)).await,
            Err(SessionError::Closed)
        ));
        store.close().await.unwrap();
    }
}
