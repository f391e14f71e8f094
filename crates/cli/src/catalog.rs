//! `sprout catalog`: ingest catalog files into the data directory, list them, show their items
//! and search them, with the same store and indexes `sprout serve` uses.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use sprout_engine::registry;
use sprout_recommend::{Catalog, LexicalIndex, TagFilter};
use sprout_server::catalogs::layout::{self, BUILT_IN};
use sprout_server::catalogs::{open_retriever, query};

use crate::progress::Progress;

/// `sprout catalog <command>`.
#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// sprout's data directory (catalogs live in <home>/catalogs).
    #[arg(long, env = "SPROUT_HOME", global = true)]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CatalogCommand,
}

/// The catalog subcommands.
#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Load a JSONL, JSON or CSV file, store it as catalog NAME and build its index.
    Ingest(IngestArgs),
    /// List the catalogs: name, items, content hash, source.
    List,
    /// Print a catalog's first items.
    Show(ShowArgs),
    /// Search a catalog (BM25).
    Search(SearchArgs),
}

/// `sprout catalog ingest FILE --name N`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The catalog file (.jsonl, .ndjson, .json or .csv).
    pub file: PathBuf,
    /// The name to serve it under (a-z, 0-9, '-', '_'); an existing catalog of that name is
    /// replaced.
    #[arg(long)]
    pub name: String,
}

/// `sprout catalog show N [--limit 20] [--json]`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The catalog.
    pub name: String,
    /// Items to print.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print `{"items": [...], "total": n}` as GET /v1/catalogs/{name}/items does.
    #[arg(long)]
    pub json: bool,
}

/// `sprout catalog search N "query" [--k 5] [--filter key=value]... [--json]`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The catalog.
    pub name: String,
    /// The query text.
    pub query: String,
    /// Results to print.
    #[arg(long, short = 'k', default_value_t = query::DEFAULT_SEARCH_RESULTS)]
    pub k: usize,
    /// Keep only items whose tag equals (or whose list holds) the value: key=value or
    /// key:value; repeatable, all must hold.
    #[arg(long = "filter", value_parser = parse_filter)]
    pub filters: Vec<TagFilter>,
    /// Print `{"results": [{"item", "score"}]}` as GET /v1/catalogs/{name}/search does.
    #[arg(long)]
    pub json: bool,
}

fn parse_filter(text: &str) -> Result<TagFilter, String> {
    query::parse_filter(text).map_err(|e| e.to_string())
}

/// Runs a catalog subcommand.
pub fn run(args: CatalogArgs) -> Result<()> {
    let data_dir = registry::data_dir(args.home.as_deref());
    match args.command {
        CatalogCommand::Ingest(a) => ingest(&data_dir, a),
        CatalogCommand::List => list(&data_dir),
        CatalogCommand::Show(a) => show(&data_dir, a),
        CatalogCommand::Search(a) => search(&data_dir, a),
    }
}

fn ingest(data_dir: &Path, args: IngestArgs) -> Result<()> {
    layout::check_name(&args.name)?;
    if args.name == BUILT_IN {
        bail!("`{BUILT_IN}` is the built-in catalog; ingest under another name");
    }
    if !args.file.is_file() {
        bail!(
            "catalog file {} not found: pass the path of a .jsonl, .ndjson, .json or .csv file \
             (catalogs/eco.jsonl in the repository is an example)",
            args.file.display()
        );
    }
    let started = Instant::now();
    let catalog = layout::read_catalog(&args.name, &args.file).with_context(|| {
        format!(
            "cannot ingest {}: fix the file as the cause below says, then run `sprout catalog \
             ingest {} --name {}` again",
            args.file.display(),
            args.file.display(),
            args.name
        )
    })?;
    let read_ms = started.elapsed().as_millis();
    eprintln!(
        "read {} items from {} in {read_ms} ms",
        catalog.len(),
        args.file.display()
    );
    let total = catalog.len() as u64;
    let source = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let bar = Progress::count(total, "items", true);
    bar.set_message(format!("storing {}", args.name));
    let items_path = layout::save_ingested(data_dir, &args.name, &catalog, &source, |written| {
        bar.bar().set_position(written as u64);
    })
    .with_context(|| {
        format!(
            "cannot store catalog {} under {} (is it writable? choose another data directory \
             with --home DIR or SPROUT_HOME)",
            args.name,
            layout::catalogs_dir(data_dir).display()
        )
    })?;
    // The stored copy must mean exactly what was read: same items, same content hash.
    let stored = layout::read_catalog(&args.name, &items_path)
        .with_context(|| format!("re-reading {}", items_path.display()))?;
    anyhow::ensure!(
        stored.content_hash() == catalog.content_hash(),
        "{} does not read back as the catalog written (content hash {} vs {})",
        items_path.display(),
        stored.content_hash(),
        catalog.content_hash()
    );
    bar.bar().set_position(total);
    let index_started = Instant::now();
    let lexical_dir = layout::index_dir(data_dir, &args.name).join("lexical");
    bar.bar().set_position(0);
    bar.set_message(format!("indexing {}", args.name));
    let index = LexicalIndex::open_or_build_with_progress(&lexical_dir, &catalog, &mut |done| {
        bar.bar().set_position(done as u64);
    })
    .with_context(|| format!("building the index in {}", lexical_dir.display()))?;
    bar.finish();
    println!(
        "ingested {} items as catalog {} (content hash {}) into {}",
        catalog.len(),
        args.name,
        short_hash(catalog.content_hash()),
        items_path.display()
    );
    println!(
        "lexical index {} in {} ms; {} ms in all",
        if index.built() {
            "built"
        } else {
            "unchanged, reused"
        },
        index_started.elapsed().as_millis(),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A catalog by name: the built-in one, or an ingested one.
fn open(data_dir: &Path, name: &str) -> Result<Catalog> {
    if name == BUILT_IN {
        return Ok(Catalog::eco());
    }
    let path = layout::items_path(data_dir, name);
    if layout::check_name(name).is_err() || !path.is_file() {
        let mut known = vec![BUILT_IN.to_string()];
        known.extend(layout::ingested_names(data_dir)?);
        bail!(
            "unknown catalog {name}: known catalogs are {} (in {}); add one with `sprout \
             catalog ingest FILE --name {name}`",
            known.join(", "),
            layout::catalogs_dir(data_dir).display()
        );
    }
    layout::read_catalog(name, &path).with_context(|| format!("reading catalog {name}"))
}

fn list(data_dir: &Path) -> Result<()> {
    println!("{:<24} {:>8}  {:<12}  source", "name", "items", "hash");
    let eco = Catalog::eco();
    let row = |name: &str, items: usize, hash: &str, source: &str| {
        println!("{name:<24} {items:>8}  {:<12}  {source}", short_hash(hash));
    };
    row(BUILT_IN, eco.len(), eco.content_hash(), "built in");
    for name in layout::ingested_names(data_dir)? {
        let path = layout::items_path(data_dir, &name);
        let catalog = layout::read_catalog(&name, &path)
            .with_context(|| format!("reading catalog {name}"))?;
        let source = layout::ingest_record(data_dir, &name).map_or_else(
            || path.display().to_string(),
            |r| r.source.display().to_string(),
        );
        row(&name, catalog.len(), catalog.content_hash(), &source);
    }
    Ok(())
}

fn show(data_dir: &Path, args: ShowArgs) -> Result<()> {
    let catalog = open(data_dir, &args.name)?;
    let items = &catalog.items()[..args.limit.min(catalog.len())];
    if args.json {
        let items: Vec<_> = items.iter().map(|item| item.to_json()).collect();
        println!("{}", json!({"items": items, "total": catalog.len()}));
        return Ok(());
    }
    for item in items {
        println!("{}", item_line(item));
    }
    println!("({} of {} items)", items.len(), catalog.len());
    Ok(())
}

/// `id  title  key=value ...` on one line.
fn item_line(item: &sprout_recommend::Item) -> String {
    let mut line = format!("{}  {}", item.id, item.title);
    for (key, value) in &item.tags {
        line.push_str(&format!("  {key}={}", value.values().join("|")));
    }
    line
}

fn search(data_dir: &Path, args: SearchArgs) -> Result<()> {
    anyhow::ensure!(!args.query.trim().is_empty(), "the query must not be empty");
    anyhow::ensure!(
        (1..=query::MAX_SEARCH_RESULTS).contains(&args.k),
        "--k must be from 1 to {}",
        query::MAX_SEARCH_RESULTS
    );
    let catalog = open(data_dir, &args.name)?;
    let (retriever, _built) =
        open_retriever(&layout::index_dir(data_dir, &args.name), catalog, None)
            .with_context(|| format!("indexing catalog {}", args.name))?;
    let hits = retriever.search(&args.query, args.k, &args.filters)?;
    let items = retriever.catalog().items();
    if args.json {
        let results: Vec<_> = hits
            .iter()
            .map(|hit| json!({"item": items[hit.index].to_json(), "score": hit.score}))
            .collect();
        println!("{}", json!({"results": results}));
        return Ok(());
    }
    if hits.is_empty() {
        println!("(no results)");
    }
    for hit in &hits {
        println!("{:>8.3}  {}", hit.score, item_line(&items[hit.index]));
    }
    Ok(())
}
