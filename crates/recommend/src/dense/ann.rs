//! Approximate cosine search for large catalogs: an HNSW graph (the `instant-distance` crate)
//! over the same unit vectors as [`ExactIndex`], with the same search API, persisted in its own
//! file beside the vectors under the same key.
//!
//! Filters: the graph knows nothing of them, so a search over-fetches (the graph always returns
//! its `ef` nearest) and filters; when few items are allowed, or the graph's candidates hold
//! fewer than `k` allowed ones, it scans the allowed items exactly instead — that scan costs
//! only a dot product per allowed item, which is what makes a selective filter cheap.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use instant_distance::{Builder, Hnsw, Search};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kernel::dot;
use super::top_k::TopK;
use super::{unit_query, ByteReader, DenseError, DenseKey, Embedder, ExactIndex};
use crate::catalog::Catalog;

/// Candidates the graph returns per search (HNSW's `ef`); `instant-distance` fixes it at build
/// time. At 10k × 768 (retrieval_bench `--dense --ef 64,128,256`): recall@10 1.000 for all
/// three on clustered vectors; 0.588 / 0.816 / 0.957 on uniformly random ones, at p50 0.75 /
/// 1.81 / 2.60 ms. At 100k, 128 gives 0.999 in 0.90 ms on clustered vectors (see
/// `ANN_MIN_ITEMS`) and 0.22 on random ones (HNSW's worst case, unlike real embeddings).
pub const ANN_EF_SEARCH: usize = 128;

/// Candidates kept while inserting (HNSW's `efConstruction`).
pub const ANN_EF_CONSTRUCTION: usize = 100;

/// Seed of the layer assignment, fixed so that a rebuild gives the same graph.
const ANN_SEED: u64 = 0x5350_524f_5554;

/// Below this share of allowed items a filtered search scans the allowed items exactly.
pub const ANN_FILTER_EXACT_BELOW: f64 = 0.1;

/// Items whose filter verdict estimates the allowed share.
const FILTER_SAMPLE: usize = 1024;

/// Over-fetch margin: the graph must be expected to return this many times `k` allowed items.
const FILTER_MARGIN: f64 = 1.5;

const MAGIC: &[u8; 8] = b"SPRHNSW1";

/// The graph's build parameters; [`AnnParameters::default`] is what sprout builds and saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParameters {
    /// Candidates returned per search (`ef`); also the most a search can over-fetch.
    pub ef_search: usize,
    /// Candidates kept while inserting (`efConstruction`).
    pub ef_construction: usize,
}

impl Default for AnnParameters {
    fn default() -> AnnParameters {
        AnnParameters {
            ef_search: ANN_EF_SEARCH,
            ef_construction: ANN_EF_CONSTRUCTION,
        }
    }
}

impl AnnParameters {
    /// What a saved graph depends on besides the key: one built otherwise is rebuilt.
    fn fingerprint(&self) -> [u64; 3] {
        [self.ef_search as u64, self.ef_construction as u64, ANN_SEED]
    }
}

/// One graph point: a unit vector; distance `1 - cosine`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UnitVector(Box<[f32]>);

impl instant_distance::Point for UnitVector {
    fn distance(&self, other: &UnitVector) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// An HNSW graph over L2-normalized vectors, one per item, searched approximately by cosine.
pub struct AnnIndex {
    dim: usize,
    parameters: AnnParameters,
    graph: Hnsw<UnitVector>,
    /// The item of each graph point, in graph order (the graph orders points its own way).
    items: Vec<u32>,
    /// Scratch reused across searches (visited marks sized to the graph).
    searches: Mutex<Vec<Search>>,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("dim", &self.dim)
            .field("len", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// How one search is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Graph,
    Exact,
}

impl AnnIndex {
    /// Builds the graph over `exact`'s vectors (already checked and normalized); this is the
    /// expensive step (see the retrieval_bench example), done once per catalog and embedder.
    pub fn build(exact: &ExactIndex) -> AnnIndex {
        AnnIndex::build_with(exact, AnnParameters::default())
    }

    /// [`AnnIndex::build`] with other parameters (for measuring them).
    pub fn build_with(exact: &ExactIndex, parameters: AnnParameters) -> AnnIndex {
        let dim = exact.dim();
        assert!(
            exact.len() < u32::MAX as usize,
            "instant-distance numbers points with u32"
        );
        let points: Vec<UnitVector> = (0..exact.len())
            .map(|item| UnitVector(exact.row(item).into()))
            .collect();
        let (graph, point_of_item) = Builder::default()
            .ef_search(parameters.ef_search)
            .ef_construction(parameters.ef_construction)
            .seed(ANN_SEED)
            .build_hnsw(points);
        let mut items = vec![0u32; point_of_item.len()];
        for (item, point) in point_of_item.into_iter().enumerate() {
            items[point.into_inner() as usize] = item as u32;
        }
        AnnIndex::assemble(dim, parameters, graph, items)
    }

    fn assemble(
        dim: usize,
        parameters: AnnParameters,
        graph: Hnsw<UnitVector>,
        items: Vec<u32>,
    ) -> AnnIndex {
        AnnIndex {
            dim,
            parameters,
            graph,
            items,
            searches: Mutex::new(Vec::new()),
        }
    }

    /// Loads the graph saved for the catalog and embedder in `dir`, or builds it from the saved
    /// (or freshly embedded, see [`ExactIndex::open_or_build`]) vectors and saves it; the flag
    /// is true when it built the graph.
    pub fn open_or_build(
        dir: &Path,
        catalog: &Catalog,
        embedder: &dyn Embedder,
    ) -> Result<(AnnIndex, bool), DenseError> {
        let key = DenseKey::new(catalog, embedder);
        match AnnIndex::load(dir, &key) {
            Ok(Some(index)) if index.len() == catalog.len() && index.dim == embedder.dim() => {
                return Ok((index, false));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "dense graph unreadable; rebuilding"),
        }
        let (exact, _) = ExactIndex::open_or_build(dir, catalog, embedder)?;
        tracing::info!(
            catalog = catalog.name(),
            items = exact.len(),
            "building HNSW graph"
        );
        let index = AnnIndex::build(&exact);
        index.save(dir, &key)?;
        Ok((index, true))
    }

    /// Length of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors (items).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// About the `k` items most similar to `query` by cosine, best first, among those `allowed`
    /// accepts; scores are exact cosines, the selection is approximate.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<Vec<(usize, f32)>, DenseError> {
        let query = unit_query(self.dim, query)?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = k.min(self.len());
        if self.plan(k, allowed) == Plan::Graph {
            let hits = self.graph_search(&query, k, allowed);
            if hits.len() >= wanted {
                return Ok(hits);
            }
        }
        Ok(self.scan(&query, k, allowed))
    }

    /// The graph when it can be expected to hold `k` allowed items among its candidates.
    fn plan(&self, k: usize, allowed: Option<&dyn Fn(usize) -> bool>) -> Plan {
        let ef_search = self.parameters.ef_search;
        if k > ef_search {
            return Plan::Exact;
        }
        let Some(allowed) = allowed else {
            return Plan::Graph;
        };
        let n = self.len();
        let sample = n.min(FILTER_SAMPLE);
        // A Weyl sequence spreads the sample without aliasing periodic catalogs (every 4th item
        // in a category, say), which a fixed stride would.
        let allowed_in_sample = (0..sample)
            .filter(|&j| {
                let position = (j as f64 * 0.618_033_988_749_895).fract() * n as f64;
                allowed((position as usize).min(n - 1))
            })
            .count();
        let share = allowed_in_sample as f64 / sample as f64;
        if share < ANN_FILTER_EXACT_BELOW || k as f64 * FILTER_MARGIN / share > ef_search as f64 {
            Plan::Exact
        } else {
            Plan::Graph
        }
    }

    /// The graph's candidates, allowed ones only, rescored exactly and cut to `k`.
    fn graph_search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        let mut search = self
            .searches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default();
        let point = UnitVector(query.into());
        let mut top = TopK::new(k, self.parameters.ef_search);
        for candidate in self.graph.search(&point, &mut search) {
            let item = self.items[candidate.pid.into_inner() as usize] as usize;
            if allowed.is_none_or(|allowed| allowed(item)) {
                top.push(item, dot(&candidate.point.0, query));
            }
        }
        self.searches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(search);
        top.into_best_first()
    }

    /// Exact top-`k` over the allowed items (the same answer as [`ExactIndex::search`]).
    fn scan(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        let mut top = TopK::new(k, self.len());
        for ((_, point), &item) in self.graph.iter().zip(&self.items) {
            let item = item as usize;
            if allowed.is_none_or(|allowed| allowed(item)) {
                top.push(item, dot(&point.0, query));
            }
        }
        top.into_best_first()
    }

    /// Writes the graph (with its vectors) for `key` into `dir`; returns the file written.
    pub fn save(&self, dir: &Path, key: &DenseKey) -> Result<PathBuf, DenseError> {
        let path = key.graph_file_in(dir);
        let io = |action, source| DenseError::Io {
            action,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir)
            .map_err(|source| io("cannot create the directory of", source))?;
        let payload = postcard::to_stdvec(&(&self.graph, &self.items))
            .map_err(|error| io("cannot encode", std::io::Error::other(error)))?;
        let mut header = Vec::with_capacity(128);
        header.extend_from_slice(MAGIC);
        for value in [self.dim as u64, self.len() as u64]
            .into_iter()
            .chain(self.parameters.fingerprint())
        {
            header.extend_from_slice(&value.to_le_bytes());
        }
        for text in [&key.catalog_hash, &key.embedder_id] {
            header.extend_from_slice(&(text.len() as u64).to_le_bytes());
            header.extend_from_slice(text.as_bytes());
        }
        header.extend_from_slice(&Sha256::digest(&payload));
        let partial = path.with_extension("hnsw.partial");
        let mut file =
            std::fs::File::create(&partial).map_err(|source| io("cannot write", source))?;
        file.write_all(&header)
            .and_then(|()| file.write_all(&payload))
            .and_then(|()| file.sync_all())
            .map_err(|source| io("cannot write", source))?;
        std::fs::rename(&partial, &path).map_err(|source| io("cannot write", source))?;
        Ok(path)
    }

    /// Reads the graph saved for `key` in `dir`; `None` when there is none for that key or it
    /// was built with other parameters.
    pub fn load(dir: &Path, key: &DenseKey) -> Result<Option<AnnIndex>, DenseError> {
        let path = key.graph_file_in(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DenseError::Io {
                    action: "cannot read",
                    path,
                    source,
                })
            }
        };
        let corrupt = |reason| DenseError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut reader = ByteReader { bytes: &bytes };
        if reader.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(corrupt("not a sprout graph file"));
        }
        let mut numbers = [0u64; 5];
        for number in &mut numbers {
            *number = reader.u64().ok_or_else(|| corrupt("truncated header"))?;
        }
        let [dim, count, parameters @ ..] = numbers;
        let catalog_hash = reader.text().ok_or_else(|| corrupt("truncated header"))?;
        let embedder_id = reader.text().ok_or_else(|| corrupt("truncated header"))?;
        if catalog_hash != key.catalog_hash || embedder_id != key.embedder_id {
            return Ok(None);
        }
        if parameters != AnnParameters::default().fingerprint() {
            return Ok(None);
        }
        let digest = reader.take(32).ok_or_else(|| corrupt("truncated header"))?;
        // The graph's neighbour ids cannot be checked from outside the crate, and a wrong one
        // would panic in search: the checksum makes sure these are the bytes that were saved.
        if Sha256::digest(reader.bytes).as_slice() != digest {
            return Err(corrupt("checksum mismatch"));
        }
        let (graph, items): (Hnsw<UnitVector>, Vec<u32>) =
            postcard::from_bytes(reader.bytes).map_err(|_| corrupt("undecodable graph"))?;
        let dim = usize::try_from(dim).map_err(|_| corrupt("dimension too large"))?;
        if dim == 0 {
            return Err(corrupt("zero dimension"));
        }
        if items.len() as u64 != count || graph.iter().count() != items.len() {
            return Err(corrupt("point count does not match the header"));
        }
        let mut seen = vec![false; items.len()];
        for &item in &items {
            match seen.get_mut(item as usize) {
                Some(seen @ false) => *seen = true,
                _ => return Err(corrupt("item numbers are not a permutation")),
            }
        }
        for (_, point) in graph.iter() {
            if point.0.len() != dim {
                return Err(corrupt("a vector of the wrong dimension"));
            }
            if !point.0.iter().all(|v| v.is_finite()) {
                return Err(corrupt("non-finite value"));
            }
        }
        Ok(Some(AnnIndex::assemble(
            dim,
            AnnParameters::default(),
            graph,
            items,
        )))
    }
}

#[cfg(test)]
mod tests;
