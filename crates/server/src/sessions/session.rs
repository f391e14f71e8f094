//! The conversation record a `sessionId` keys: its bounded history, its current and base
//! category, location and work type.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::SessionIdError;

/// How many history messages a session keeps unless configured otherwise (the original kept 6).
pub const DEFAULT_HISTORY_LIMIT: usize = 6;

/// The longest session id accepted, in bytes (all accepted characters are ASCII).
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// A session id that has been checked: 1–128 characters of `[A-Za-z0-9_.:-]`.
///
/// Only this type reaches a store, so no store ever sees an empty, huge or odd key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Checks `raw` and wraps it.
    pub fn parse(raw: &str) -> Result<Self, SessionIdError> {
        if raw.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if raw.len() > MAX_SESSION_ID_BYTES {
            return Err(SessionIdError::TooLong {
                len_bytes: raw.len(),
                max_bytes: MAX_SESSION_ID_BYTES,
            });
        }
        if let Some((at, ch)) = raw
            .char_indices()
            .find(|&(_, ch)| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':')))
        {
            return Err(SessionIdError::BadChar { ch, at });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = SessionIdError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> Self {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who said a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person chatting.
    User,
    /// The model's answer.
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// When it was said, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Turn {
    /// A turn said by `role` at `at_ms`.
    pub fn new(role: Role, text: impl Into<String>, at_ms: u64) -> Self {
        Self {
            role,
            text: text.into(),
            at_ms,
        }
    }
}

/// The state of one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The key.
    pub id: SessionId,
    /// How many writes the stored record has seen (0 for one never stored); a store bumps it on
    /// every write and [`SessionStore::save`](super::SessionStore::save) checks it.
    pub version: u64,
    /// The last messages, oldest first, at most the store's history limit.
    pub history: Vec<Turn>,
    /// The category code the conversation is in now.
    pub category: Option<String>,
    /// The category from the last base-info call, what "원래/처음/이전/기존" restores.
    pub base_category: Option<String>,
    /// The location from base-info.
    pub location: Option<String>,
    /// The work type from base-info.
    pub work_type: Option<String>,
    /// When the session was first stored, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the session was last stored, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

impl Session {
    /// An empty session that has never been stored.
    pub fn new(id: SessionId, now_ms: u64) -> Self {
        Self {
            id,
            version: 0,
            history: Vec::new(),
            category: None,
            base_category: None,
            location: None,
            work_type: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Appends `turn` and drops the oldest turns beyond `limit`.
    pub fn push_turn(&mut self, turn: Turn, limit: usize) {
        self.history.push(turn);
        self.truncate_history(limit);
    }

    /// Drops the oldest turns beyond `limit`.
    pub fn truncate_history(&mut self, limit: usize) {
        if self.history.len() > limit {
            let excess = self.history.len() - limit;
            self.history.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_accept_the_documented_alphabet() {
        for ok in [
            "a",
            "A-z_0.9:x",
            &"x".repeat(128),
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert_eq!(SessionId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn session_ids_refuse_empty_long_and_odd_characters() {
        assert_eq!(SessionId::parse(""), Err(SessionIdError::Empty));
        assert_eq!(
            SessionId::parse(&"x".repeat(129)),
            Err(SessionIdError::TooLong {
                len_bytes: 129,
                max_bytes: 128
            })
        );
        assert_eq!(
            SessionId::parse("ab/../c"),
            Err(SessionIdError::BadChar { ch: '/', at: 2 })
        );
        assert_eq!(
            SessionId::parse("세션"),
            Err(SessionIdError::BadChar { ch: '세', at: 0 })
        );
        assert_eq!(
            SessionId::parse("a b"),
            Err(SessionIdError::BadChar { ch: ' ', at: 1 })
        );
        assert_eq!(
            SessionId::parse("a\0"),
            Err(SessionIdError::BadChar { ch: '\0', at: 1 })
        );
    }

    #[test]
    fn session_ids_are_checked_when_deserialized() {
        assert!(serde_json::from_str::<SessionId>("\"ok-1\"").is_ok());
        let err = serde_json::from_str::<SessionId>("\"no way\"").unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
    }

    #[test]
    fn sessions_keep_the_last_turns_within_the_limit() {
        let mut session = Session::new(SessionId::parse("s").unwrap(), 0);
        for i in 0..10 {
            session.push_turn(Turn::new(Role::User, format!("t{i}"), i), 6);
        }
        let texts: Vec<&str> = session.history.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["t4", "t5", "t6", "t7", "t8", "t9"]);
        session.truncate_history(0);
        assert!(session.history.is_empty());
    }

    #[test]
    fn sessions_serialize_roles_in_lowercase() {
        let turn = Turn::new(Role::Assistant, "네", 5);
        assert_eq!(
            serde_json::to_string(&turn).unwrap(),
            r#"{"role":"assistant","text":"네","at_ms":5}"#
        );
    }
}
