//! One catalog item: its fields, its text for indexing, its localized view and tag matching.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A tag's value: one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TagValue {
    /// A single value, e.g. `"category": "ZERO_WASTE"`.
    One(String),
    /// A list, e.g. `"locations": ["도시", "바닷가"]`.
    List(Vec<String>),
}

impl TagValue {
    /// The values, one for `One`, all of them for `List`.
    pub fn values(&self) -> &[String] {
        match self {
            TagValue::One(value) => std::slice::from_ref(value),
            TagValue::List(values) => values,
        }
    }

    /// Whether the value equals `wanted`, or the list contains it.
    pub fn matches(&self, wanted: &str) -> bool {
        self.values().iter().any(|value| value == wanted)
    }
}

/// An item's title and description in another language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// The translated title (never empty).
    pub title: String,
    /// The translated description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A thing to recommend: an id, a title, optional description, tags, language and translations.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique within its catalog, never empty.
    pub id: String,
    /// Never empty.
    pub title: String,
    /// Free text, if any.
    pub description: Option<String>,
    /// Tag key to value(s), e.g. `category`, `locations`.
    pub tags: BTreeMap<String, TagValue>,
    /// Language of `title` and `description` (e.g. `ko`), if known.
    pub lang: Option<String>,
    /// Language code to translated title and description.
    pub translations: BTreeMap<String, Translation>,
    /// Fields of the source object beyond the ones above, kept as they were.
    pub extra: Map<String, Value>,
}

impl Item {
    /// An item with just an id and a title.
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Item {
        Item {
            id: id.into(),
            title: title.into(),
            description: None,
            tags: BTreeMap::new(),
            lang: None,
            translations: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// The text the lexical and dense indexes see: title, description, tag values, translations.
    pub fn text_for_index(&self) -> String {
        let mut parts: Vec<&str> = vec![&self.title];
        parts.extend(self.description.as_deref());
        for value in self.tags.values() {
            parts.extend(value.values().iter().map(String::as_str));
        }
        for translation in self.translations.values() {
            parts.push(&translation.title);
            parts.extend(translation.description.as_deref());
        }
        parts.join("\n")
    }

    /// Title and description in `lang` (`en`, `zh`, `en-US` falls back to `en`), else the originals.
    ///
    /// A translation without a description borrows the original one.
    pub fn localized(&self, lang: &str) -> (&str, Option<&str>) {
        let original = (self.title.as_str(), self.description.as_deref());
        if self
            .lang
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(lang))
        {
            return original;
        }
        let primary = lang.split(['-', '_']).next().unwrap_or(lang);
        let found = self
            .translations
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(lang))
            .or_else(|| {
                self.translations
                    .iter()
                    .find(|(code, _)| code.eq_ignore_ascii_case(primary))
            });
        match found {
            Some((_, translation)) => (
                translation.title.as_str(),
                translation.description.as_deref().or(original.1),
            ),
            None => original,
        }
    }

    /// Whether every filter holds: the tag exists and equals (or its list contains) the value.
    pub fn matches(&self, filters: &[TagFilter]) -> bool {
        filters.iter().all(|filter| {
            self.tags
                .get(&filter.key)
                .is_some_and(|value| value.matches(&filter.value))
        })
    }

    /// The item as a JSON object: known fields (absent and empty ones omitted), then `extra`.
    pub fn to_json(&self) -> Value {
        let mut object = self.extra.clone();
        object.insert("id".into(), Value::String(self.id.clone()));
        object.insert("title".into(), Value::String(self.title.clone()));
        if let Some(description) = &self.description {
            object.insert("description".into(), Value::String(description.clone()));
        }
        if let Some(lang) = &self.lang {
            object.insert("lang".into(), Value::String(lang.clone()));
        }
        if !self.tags.is_empty() {
            let tags = self
                .tags
                .iter()
                .map(|(key, value)| (key.clone(), serde_json::json!(value)))
                .collect();
            object.insert("tags".into(), Value::Object(tags));
        }
        if !self.translations.is_empty() {
            let translations = self
                .translations
                .iter()
                .map(|(lang, translation)| (lang.clone(), serde_json::json!(translation)))
                .collect();
            object.insert("translations".into(), Value::Object(translations));
        }
        Value::Object(object)
    }
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// A tag equality filter, written `key=value` (e.g. `category=ZERO_WASTE`, `locations=도시`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    /// The tag key.
    pub key: String,
    /// The value the tag must equal or contain.
    pub value: String,
}

impl TagFilter {
    /// A filter on `key` equal to (or containing) `value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> TagFilter {
        TagFilter {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A filter string that is not `key=value` with a non-empty key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag filter {0:?}: expected key=value, e.g. category=ZERO_WASTE")]
pub struct TagFilterError(pub String);

impl FromStr for TagFilter {
    type Err = TagFilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok(TagFilter::new(key.trim(), value.trim()))
            }
            _ => Err(TagFilterError(s.to_string())),
        }
    }
}
