//! The session database's schema, versioned by `PRAGMA user_version`: migration `i` (0-based)
//! takes a database from version `i` to `i + 1`.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::SessionError;

/// Every migration in order. Add one at the end to change the schema; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: one row per session; the history is a JSON array of turns (always read and written
    // whole), the fields the prompt branches on are columns.
    "CREATE TABLE sessions (
        id            TEXT PRIMARY KEY NOT NULL,
        version       INTEGER NOT NULL,
        history       TEXT NOT NULL,
        category      TEXT,
        base_category TEXT,
        location      TEXT,
        work_type     TEXT,
        created_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_updated_ms ON sessions (updated_ms);",
    // 2: one row per reader of the book recommender; history and preferences are JSON
    // documents (see sessions::users), each written whole.
    "CREATE TABLE users (
        id          TEXT PRIMARY KEY NOT NULL,
        history     TEXT,
        preferences TEXT,
        updated_ms  INTEGER NOT NULL
    ) STRICT;",
];

/// The schema version this build creates and understands.
pub(crate) fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database to [`current_version`], in one transaction that holds the write lock (so
/// two processes opening one file at once do not both migrate); refuses a version it does not
/// know. Returns the version found.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, SessionError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let supported = current_version();
    let Some(applied) = usize::try_from(found)
        .ok()
        .filter(|&v| v <= MIGRATIONS.len())
    else {
        return Err(SessionError::UnknownSchema {
            path: path.to_owned(),
            found,
            supported,
        });
    };
    if applied < MIGRATIONS.len() {
        for sql in &MIGRATIONS[applied..] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", supported)?;
    }
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_migrations_run_once_and_set_the_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, path).unwrap(), 0);
        assert_eq!(migrate(&mut conn, path).unwrap(), current_version());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, current_version());
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }

    #[test]
    fn sessions_migrations_refuse_a_negative_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", -1).unwrap();
        let err = migrate(&mut conn, Path::new("x.sqlite3")).unwrap_err();
        assert!(
            matches!(
                err,
                SessionError::UnknownSchema {
                    found: -1,
                    supported: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
