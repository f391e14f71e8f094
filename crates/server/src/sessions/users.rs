//! What sprout knows about a reader, behind the [`UserStore`] trait: the books read and the
//! reading preferences, stored per user id beside the sessions (same database, same connection
//! thread, table `users` from migration 2).
//!
//! The records are the shapes of the book recommender's test-case files
//! (`user_reading_history.json`, `user_reading_preferences.json`), checked by the books API
//! before they reach the store and kept as JSON text.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::{SessionError, SessionId, SqliteSessionStore, StoreFuture};

/// A user id: the same charset and length limit as a session id.
pub type UserId = SessionId;

/// One book a user has read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBook {
    /// As the reader wrote it (often without the subtitle).
    pub title: String,
    /// The author line, e.g. `토머스 커런 지음 ;김문주 옮김`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// 0–5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    /// The reader's words about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// When it was read, as given (e.g. `2024-01-05`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_date: Option<String>,
    /// Its genres, e.g. `["심리학", "자기계발"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub genre: Vec<String>,
}

/// `{"read_books":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingHistory {
    /// In the order given.
    pub read_books: Vec<ReadBook>,
}

/// A preferred genre and how much it counts (0–1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenreWeight {
    /// e.g. `심리학`.
    pub name: String,
    /// 0–1; higher counts more.
    pub weight: f64,
}

/// How a user likes to read: free words such as `중간`, `쉬움`, `따뜻함`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingStyle {
    /// e.g. `중간`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_length: Option<String>,
    /// e.g. `쉬움`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity_level: Option<String>,
    /// e.g. `따뜻함`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
}

/// What a user prefers and avoids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingPreferences {
    /// Preferred genres with weights.
    #[serde(default)]
    pub genres: Vec<GenreWeight>,
    /// Length, difficulty and tone.
    #[serde(default)]
    pub reading_style: ReadingStyle,
    /// Words the reader's books are about (`불안`, `힐링`…); they enrich the RAG query.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Topics no recommended book may mention (see `books::service`).
    #[serde(default)]
    pub avoid_topics: Vec<String>,
}

/// Everything stored about one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserProfile {
    /// The books read, if stored.
    pub history: Option<ReadingHistory>,
    /// The preferences, if stored.
    pub preferences: Option<ReadingPreferences>,
}

/// Where user profiles live. Object-safe (boxed futures), like [`super::SessionStore`].
pub trait UserStore: Send + Sync {
    /// The profile stored under `id`, if any part of it is.
    fn profile<'a>(&'a self, id: &'a UserId) -> StoreFuture<'a, Option<UserProfile>>;

    /// Replaces the user's reading history (creating the user if needed).
    fn set_history<'a>(&'a self, id: &'a UserId, history: ReadingHistory) -> StoreFuture<'a, ()>;

    /// Replaces the user's preferences (creating the user if needed).
    fn set_preferences<'a>(
        &'a self,
        id: &'a UserId,
        preferences: ReadingPreferences,
    ) -> StoreFuture<'a, ()>;
}

fn corrupt(id: &UserId, what: &str, error: serde_json::Error) -> SessionError {
    SessionError::Corrupt {
        id: id.to_string(),
        reason: format!("user {what}: {error}"),
    }
}

impl SqliteSessionStore {
    /// Writes one JSON column of a user's row, creating the row if needed.
    fn set_user_column(
        &self,
        id: &UserId,
        column: &'static str,
        json: String,
    ) -> StoreFuture<'_, ()> {
        let id = id.clone();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO users (id, {column}, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET {column} = excluded.{column},
                   updated_ms = excluded.updated_ms"
            ))?
            .execute(rusqlite::params![id.as_str(), json, now_ms])?;
            Ok(())
        })
    }
}

impl UserStore for SqliteSessionStore {
    fn profile<'a>(&'a self, id: &'a UserId) -> StoreFuture<'a, Option<UserProfile>> {
        let id = id.clone();
        self.run(move |conn| {
            let row: Option<(Option<String>, Option<String>)> = conn
                .prepare_cached("SELECT history, preferences FROM users WHERE id = ?1")?
                .query_row([id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((history, preferences)) = row else {
                return Ok(None);
            };
            let history = history
                .map(|h| serde_json::from_str(&h).map_err(|e| corrupt(&id, "history", e)))
                .transpose()?;
            let preferences = preferences
                .map(|p| serde_json::from_str(&p).map_err(|e| corrupt(&id, "preferences", e)))
                .transpose()?;
            Ok(Some(UserProfile {
                history,
                preferences,
            }))
        })
    }

    fn set_history<'a>(&'a self, id: &'a UserId, history: ReadingHistory) -> StoreFuture<'a, ()> {
        match serde_json::to_string(&history) {
            Ok(json) => self.set_user_column(id, "history", json),
            Err(e) => {
                let error = corrupt(id, "history", e);
                Box::pin(async move { Err(error) })
            }
        }
    }

    fn set_preferences<'a>(
        &'a self,
        id: &'a UserId,
        preferences: ReadingPreferences,
    ) -> StoreFuture<'a, ()> {
        match serde_json::to_string(&preferences) {
            Ok(json) => self.set_user_column(id, "preferences", json),
            Err(e) => {
                let error = corrupt(id, "preferences", e);
                Box::pin(async move { Err(error) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::SessionsConfig;

    fn history(titles: &[&str]) -> ReadingHistory {
        ReadingHistory {
            read_books: titles
                .iter()
                .map(|t| ReadBook {
                    title: t.to_string(),
                    author: None,
                    rating: Some(4.5),
                    review: None,
                    read_date: None,
                    genre: vec!["에세이".into()],
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn users_history_and_preferences_are_stored_apart_and_replaced() {
        let store = SqliteSessionStore::open_in_memory(&SessionsConfig::default()).unwrap();
        let (a, b) = (UserId::parse("u1").unwrap(), UserId::parse("u2").unwrap());
        assert_eq!(store.profile(&a).await.unwrap(), None);
        store.set_history(&a, history(&["책 하나"])).await.unwrap();
        let prefs = ReadingPreferences {
            avoid_topics: vec!["우울".into()],
            ..ReadingPreferences::default()
        };
        store.set_preferences(&a, prefs.clone()).await.unwrap();
        store
            .set_history(&a, history(&["책 둘", "책 셋"]))
            .await
            .unwrap();
        let profile = store.profile(&a).await.unwrap().unwrap();
        assert_eq!(profile.history, Some(history(&["책 둘", "책 셋"])));
        assert_eq!(profile.preferences, Some(prefs));
        store
            .set_preferences(&b, ReadingPreferences::default())
            .await
            .unwrap();
        let other = store.profile(&b).await.unwrap().unwrap();
        assert_eq!(other.history, None, "users do not see each other's records");
    }

    #[tokio::test]
    async fn users_survive_a_reopen_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = UserId::parse("reader").unwrap();
        {
            let store = SqliteSessionStore::open(dir.path(), &SessionsConfig::default()).unwrap();
            store.set_history(&id, history(&["책"])).await.unwrap();
            crate::sessions::SessionStore::close(&store).await.unwrap();
        }
        let store = SqliteSessionStore::open(dir.path(), &SessionsConfig::default()).unwrap();
        let profile = store.profile(&id).await.unwrap().unwrap();
        assert_eq!(profile.history, Some(history(&["책"])));
    }
}
