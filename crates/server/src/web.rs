//! The chat page at `/`: three static assets compiled into the binary (no CDN, no build step,
//! works offline), served with their content type, an ETag from their content and
//! `Cache-Control: no-cache` so that a browser revalidates (a 304 costs nothing) and never runs
//! a stale script against a newer server.

use std::sync::OnceLock;

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// One embedded file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `/`: the page.
    Index,
    /// `/assets/app.js`: the whole client.
    Script,
    /// `/assets/app.css`: its styles.
    Style,
}

impl Asset {
    /// Every asset, in the order the page loads them.
    pub const ALL: [Asset; 3] = [Asset::Index, Asset::Script, Asset::Style];

    /// The path it is served at.
    pub fn path(self) -> &'static str {
        match self {
            Asset::Index => "/",
            Asset::Script => "/assets/app.js",
            Asset::Style => "/assets/app.css",
        }
    }

    /// Its bytes, as compiled in.
    pub fn body(self) -> &'static str {
        match self {
            Asset::Index => include_str!("../web/index.html"),
            Asset::Script => include_str!("../web/app.js"),
            Asset::Style => include_str!("../web/app.css"),
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Asset::Index => "text/html; charset=utf-8",
            Asset::Script => "text/javascript; charset=utf-8",
            Asset::Style => "text/css; charset=utf-8",
        }
    }

    /// Its strong ETag, `"<16 hex digits of FNV-1a 64 over the body>"`, computed once.
    pub fn etag(self) -> &'static str {
        static ETAGS: OnceLock<[String; 3]> = OnceLock::new();
        let etags = ETAGS.get_or_init(|| {
            Asset::ALL.map(|a| format!("\"{:016x}\"", fnv1a64(a.body().as_bytes())))
        });
        &etags[self as usize]
    }
}

/// FNV-1a, 64 bits: a stable content hash (std's hasher may change between Rust releases,
/// which would change ETags for the same bytes); collisions only cost a stale revalidation.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The page's Content-Security-Policy: everything from this origin only; no inline script or
/// style, no framing. `img-src data:` is for the empty favicon the page declares.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether an `If-None-Match` header value names `etag` (a list, or `*`; weak tags compare
/// weakly, as RFC 9110 asks for GET).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The response for `asset` to a request with `headers`: 200 with the body, or 304 when the
/// browser's copy is current.
pub fn respond(asset: Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_etag(v, etag));
    let common = [
        (header::ETAG, HeaderValue::from_static(etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut response = (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type()),
        )],
        asset.body(),
    )
        .into_response();
    if asset == Asset::Index {
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// The page's routes; no API key (the page asks for one when `/v1` answers 401).
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for asset in Asset::ALL {
        r = r.route(
            asset.path(),
            get(move |headers: HeaderMap| async move { respond(asset, &headers) }),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn each_asset_has_its_type_an_etag_and_no_cache() {
        for (asset, ty) in [
            (Asset::Index, "text/html; charset=utf-8"),
            (Asset::Script, "text/javascript; charset=utf-8"),
            (Asset::Style, "text/css; charset=utf-8"),
        ] {
            let r = respond(asset, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{asset:?}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ty);
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&r, header::ETAG), asset.etag());
            assert_eq!(asset.etag().len(), 18, "{}", asset.etag());
        }
        let tags: std::collections::HashSet<_> = Asset::ALL.iter().map(|a| a.etag()).collect();
        assert_eq!(tags.len(), 3, "the three assets share an ETag");
    }

    #[test]
    fn a_current_copy_gets_304_and_a_stale_one_the_body() {
        let mut h = HeaderMap::new();
        let current = format!("\"0\", W/{}", Asset::Script.etag());
        h.insert(header::IF_NONE_MATCH, current.parse().unwrap());
        let r = respond(Asset::Script, &h);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&r, header::ETAG), Asset::Script.etag());
        h.insert(
            header::IF_NONE_MATCH,
            "\"0123456789abcdef\"".parse().unwrap(),
        );
        assert_eq!(respond(Asset::Script, &h).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_loads_only_its_own_assets_under_a_strict_policy() {
        let html = Asset::Index.body();
        for asset in [Asset::Script, Asset::Style] {
            assert!(
                html.contains(asset.path()),
                "index.html misses {}",
                asset.path()
            );
        }
        for outside in ["http://", "https://", "//cdn", "<script>", "style="] {
            assert!(!html.contains(outside), "index.html holds {outside}");
        }
        let r = respond(Asset::Index, &HeaderMap::new());
        assert_eq!(
            header(&r, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[test]
    fn fnv1a64_matches_its_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
