//! Query strings of the streaming (GET) endpoints: split into fields and percent-decoded, once
//! more while a value still looks encoded (the Leafresh front end sometimes encodes twice).
//!
//! The first decoding is strict: a `%` must start a `%XX` escape and the bytes must be UTF-8,
//! else the request is refused (a malformed URL is a client bug worth surfacing). Further
//! decodings are opportunistic: they happen only when every `%` in the value starts a valid
//! escape and the result is UTF-8, so a literal `%` the user typed ("100%", "50%가", even
//! "30%AB" whose second decoding would not be UTF-8) survives. A message that literally
//! contains a valid escape such as "%20" after its single encoding is indistinguishable from a
//! double-encoded one and is decoded; the original (`urllib.parse.unquote` on every value) did
//! the same.

use super::error::{Field, LeafreshError};

/// Decodings applied to one value at most: the URL's own, the front end's extra one, and one
/// spare; bounds the work on hostile input.
pub const MAX_DECODINGS: usize = 4;

/// The fields of a Leafresh query string, each decoded; unknown parameters are dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryFields {
    pub session_id: Option<String>,
    pub location: Option<String>,
    pub work_type: Option<String>,
    pub category: Option<String>,
    pub message: Option<String>,
    pub lang: Option<String>,
}

impl QueryFields {
    fn slot(&mut self, field: Field) -> &mut Option<String> {
        match field {
            Field::SessionId => &mut self.session_id,
            Field::Location => &mut self.location,
            Field::WorkType => &mut self.work_type,
            Field::Category => &mut self.category,
            Field::Message => &mut self.message,
            Field::Lang => &mut self.lang,
        }
    }
}

/// Splits and decodes a query string (without the `?`). Parameters other than the five fields
/// are ignored, as the original (FastAPI `Query`) ignored them: EventSource URLs often carry
/// cache-busters. A field given twice is refused rather than silently picking one.
pub fn parse_query(query: &str) -> Result<QueryFields, LeafreshError> {
    let mut fields = QueryFields::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // A key that does not decode cannot be one of ours.
        let Some(key) = decode_once(raw_key, true) else {
            continue;
        };
        let Some(field) = field_named(&key) else {
            continue;
        };
        let value = decode_value(raw_value).ok_or(LeafreshError::BadPercentEncoding { field })?;
        let slot = fields.slot(field);
        if slot.is_some() {
            return Err(LeafreshError::Malformed {
                field: Some(field.name().to_string()),
                detail: format!("{} is given more than once", field.name()),
            });
        }
        *slot = Some(value);
    }
    Ok(fields)
}

fn field_named(key: &str) -> Option<Field> {
    [
        Field::SessionId,
        Field::Location,
        Field::WorkType,
        Field::Category,
        Field::Message,
        Field::Lang,
    ]
    .into_iter()
    .find(|f| f.name() == key)
}

/// Decodes one query value: strictly once (`+` is a space, as in any form-encoded query), then
/// again while it still looks percent-encoded (`+` is then literal: a space encoded twice
/// arrives as `%2520`). None when the first decoding fails.
pub fn decode_value(raw: &str) -> Option<String> {
    let mut value = decode_once(raw, true)?;
    for _ in 1..MAX_DECODINGS {
        if !looks_encoded(&value) {
            break;
        }
        match decode_once(&value, false) {
            Some(next) => value = next,
            None => break,
        }
    }
    Some(value)
}

/// Whether the value holds at least one `%XX` and every `%` starts one.
fn looks_encoded(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut escapes = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            if !is_escape(&bytes[i..]) {
                return false;
            }
            escapes += 1;
        }
    }
    escapes > 0
}

fn is_escape(at_percent: &[u8]) -> bool {
    at_percent.len() >= 3 && at_percent[1].is_ascii_hexdigit() && at_percent[2].is_ascii_hexdigit()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// One strict percent-decoding: None on a `%` that starts no escape or on bytes that are not
/// UTF-8.
fn decode_once(raw: &str, plus_is_space: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                if !is_escape(&bytes[i..]) {
                    return None;
                }
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_double_encoding_decode_to_the_same_text() {
        // "분리수거" encoded once, and encoded twice (every % became %25).
        let once = "%EB%B6%84%EB%A6%AC%EC%88%98%EA%B1%B0";
        let twice = "%25EB%25B6%2584%25EB%25A6%25AC%25EC%2588%2598%25EA%25B1%25B0";
        assert_eq!(decode_value(once).unwrap(), "분리수거");
        assert_eq!(decode_value(twice).unwrap(), "분리수거");
        assert_eq!(decode_value("%25EB%25B6%2584").unwrap(), "분");
        // Triple encoding is within the bound too.
        assert_eq!(decode_value("%2525EB%2525B6%252584").unwrap(), "분");
        assert_eq!(decode_value("plain").unwrap(), "plain");
        assert_eq!(decode_value("").unwrap(), "");
    }

    #[test]
    fn spaces_and_plus() {
        assert_eq!(decode_value("a+b%20c").unwrap(), "a b c");
        // Encoded twice: the space is %2520, a real plus %252B.
        assert_eq!(decode_value("a%2520b%252Bc").unwrap(), "a b+c");
        // After the first decoding a plus is literal.
        assert_eq!(decode_value("%2B1%2B").unwrap(), "+1+");
    }

    #[test]
    fn literal_percent_survives() {
        // "100% 줄이기" and "50%가" encoded once: the decoded '%' starts no escape.
        assert_eq!(decode_value("100%25%20%EC%A4%84").unwrap(), "100% 줄");
        assert_eq!(decode_value("50%25%EA%B0%80").unwrap(), "50%가");
        assert_eq!(decode_value("100%25").unwrap(), "100%");
        // "30%AB" encoded once: decoding "%AB" again would not be UTF-8, so it stays.
        assert_eq!(decode_value("30%25AB").unwrap(), "30%AB");
        // A mix of a literal % and an escape is not a double encoding.
        assert_eq!(decode_value("5%25%20%2541").unwrap(), "5% %41");
    }

    #[test]
    fn malformed_first_layer_is_refused() {
        for raw in ["%", "%E", "%ZZ", "abc%", "%FF", "%EB%B6", "%C0%AF"] {
            assert_eq!(decode_value(raw), None, "{raw}");
        }
    }

    #[test]
    fn query_fields() {
        let q = parse_query(
            "sessionId=s1&location=%EB%8F%84%EC%8B%9C&workType=office&category=%25EB%25B9%2584%25EA%25B1%25B4&_=123",
        )
        .unwrap();
        assert_eq!(
            q,
            QueryFields {
                session_id: Some("s1".into()),
                location: Some("도시".into()),
                work_type: Some("office".into()),
                category: Some("비건".into()),
                message: None,
                lang: None,
            }
        );
        let q = parse_query("message=&sessionId").unwrap();
        assert_eq!(
            (q.message.as_deref(), q.session_id.as_deref()),
            (Some(""), Some(""))
        );
        assert_eq!(parse_query("").unwrap(), QueryFields::default());
    }

    #[test]
    fn query_errors() {
        assert_eq!(
            parse_query("message=%E0%A4").unwrap_err(),
            LeafreshError::BadPercentEncoding {
                field: Field::Message
            }
        );
        assert!(matches!(
            parse_query("category=a&category=b").unwrap_err(),
            LeafreshError::Malformed { field: Some(f), .. } if f == "category"
        ));
        // Bad encoding in a parameter we ignore is not our business.
        assert!(parse_query("x=%ZZ&%ZZ=1").is_ok());
    }
}
