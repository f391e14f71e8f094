//! The server's configuration: one typed struct, read from a TOML file, then overridden by the
//! command line (which also reads `SPROUT_*` environment variables and `.env`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Everything the HTTP layer needs to know, built once at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Bearer key required on /v1 routes; None leaves them open.
    pub api_key: Option<String>,
    /// Origins allowed by CORS ("*" for any); empty disables CORS headers.
    pub cors_allow_origins: Vec<String>,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Requests generating at once.
    pub max_concurrent: usize,
    /// Requests waiting beyond those; more are refused with 429.
    pub max_queue: usize,
    /// Per-request limit on generation time.
    pub request_timeout_ms: u64,
    /// max_tokens when a request gives none (clipped to the context).
    pub default_max_tokens: usize,
    /// Tokens fed to one engine step at most.
    pub step_tokens: usize,
    /// Share KV blocks of repeated prompt prefixes.
    pub prefix_cache: bool,
    /// Interval of SSE keep-alive comments while a stream waits.
    pub sse_keepalive_ms: u64,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Append a grammar's forced continuations without sampling them (jump-forward).
    pub jump_forward: bool,
    /// sprout's data directory (ingested catalogs and their indexes live in
    /// `<data_dir>/catalogs`); None means sprout's default data directory.
    pub data_dir: Option<PathBuf>,
    /// Catalog files served beside the built-in `eco` and the ingested ones (`[[catalogs]]`).
    pub catalogs: Vec<CatalogSource>,
    /// A sentence-transformers directory (EmbeddingGemma by default, resolved by the CLI):
    /// `/v1/embeddings`, and dense + BM25 retrieval over every catalog. None: BM25 only.
    pub embedder: Option<PathBuf>,
    /// The session store (`[sessions]`: history_limit, synchronous, busy_timeout_ms).
    pub sessions: crate::sessions::SessionsConfig,
    /// Where the Leafresh challenges' descriptions come from: the catalog (the default) or the
    /// model (an experiment, for `sprout eval` to compare).
    pub leafresh_descriptions: DescriptionSource,
}

/// Where a recommended item's description comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptionSource {
    /// The catalog's text, copied (exact, grounded, nothing for the model to write).
    #[default]
    Catalog,
    /// One bounded Korean sentence per item written by the model under the grammar.
    Generated,
}

impl FromStr for DescriptionSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "catalog" => Ok(DescriptionSource::Catalog),
            "generated" => Ok(DescriptionSource::Generated),
            other => Err(format!("{other:?} is neither catalog nor generated")),
        }
    }
}

/// A catalog file to serve under a name: `[[catalogs]] name = "books" path = "books.csv"` in
/// TOML, `books=books.csv` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSource {
    /// The name the catalog is served under (`/v1/catalogs/{name}`).
    pub name: String,
    /// A JSONL, JSON or CSV file (format by extension).
    pub path: PathBuf,
}

/// A catalog source written other than `NAME=FILE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAME=FILE (e.g. books=books.csv), got {0:?}")]
pub struct CatalogSourceError(pub String);

impl FromStr for CatalogSource {
    type Err = CatalogSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, path)) if !name.trim().is_empty() && !path.trim().is_empty() => {
                Ok(CatalogSource {
                    name: name.trim().to_string(),
                    path: PathBuf::from(path.trim()),
                })
            }
            _ => Err(CatalogSourceError(s.to_string())),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 9000,
            api_key: None,
            cors_allow_origins: Vec::new(),
            body_limit_bytes: 4 << 20,
            max_concurrent: 16,
            max_queue: 64,
            request_timeout_ms: 600_000,
            default_max_tokens: 2048,
            step_tokens: 256,
            prefix_cache: true,
            sse_keepalive_ms: 10_000,
            shutdown_grace_ms: 30_000,
            jump_forward: true,
            data_dir: None,
            catalogs: Vec::new(),
            embedder: None,
            sessions: Default::default(),
            leafresh_descriptions: DescriptionSource::Catalog,
        }
    }
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
}

impl ServerConfig {
    /// Reads a TOML file (every key optional, unknown keys refused). Relative paths in it
    /// (`data_dir`, catalog paths) are taken relative to the file's directory, so a config
    /// means the same thing whatever directory sprout is started from.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let mut config: ServerConfig =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: p, source })?;
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(dir) = &mut config.data_dir {
            *dir = base.join(&*dir);
        }
        for source in &mut config.catalogs {
            source.path = base.join(&source.path);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_refuses_unknown_keys() {
        let c: ServerConfig = toml::from_str("port = 8080\nmax_queue = 3").unwrap();
        assert_eq!((c.port, c.max_queue, c.max_concurrent), (8080, 3, 16));
        let e = toml::from_str::<ServerConfig>("prot = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn catalogs_come_from_toml_tables_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sprout.toml");
        std::fs::write(
            &file,
            "data_dir = \"data\"\n[[catalogs]]\nname = \"books\"\npath = \"books.csv\"\n\
             [[catalogs]]\nname = \"abs\"\npath = \"/srv/abs.jsonl\"\n",
        )
        .unwrap();
        let c = ServerConfig::from_toml_file(&file).unwrap();
        assert_eq!(c.data_dir, Some(dir.path().join("data")));
        assert_eq!(
            c.catalogs,
            vec![
                CatalogSource {
                    name: "books".into(),
                    path: dir.path().join("books.csv")
                },
                CatalogSource {
                    name: "abs".into(),
                    path: "/srv/abs.jsonl".into()
                },
            ]
        );
        let e = toml::from_str::<ServerConfig>("[[catalogs]]\nname = \"x\"\nfile = \"y\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("file"), "{e}");
    }

    #[test]
    fn catalog_flags_are_name_equals_file() {
        let s: CatalogSource = " books = data/books.csv ".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.path.as_path()),
            ("books", Path::new("data/books.csv"))
        );
        for bad in ["books", "=books.csv", "books=", ""] {
            assert_eq!(
                bad.parse::<CatalogSource>(),
                Err(CatalogSourceError(bad.to_string()))
            );
        }
    }
}
