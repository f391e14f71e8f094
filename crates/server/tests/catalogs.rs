//! The catalogs API on a real server in this process, without a model: `sprout_server::start`
//! with a loader that fails, so the OpenAI routes stay unavailable while the catalogs (loaded
//! before the listener serves) answer. Each test has its own data directory.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sprout_engine::scheduler::SchedulerConfig;
use sprout_recommend::Catalog;
use sprout_server::catalogs::layout;
use sprout_server::{CatalogSource, LoadedModel, RunningServer, ServerConfig};

const KEY: &str = "catalog-key";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// GET `path` with `query` and the API key; the status and the JSON body (Null if none).
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send();
        response.await.unwrap().text().await.unwrap()
    }
}

fn config(data_dir: &Path, catalogs: Vec<CatalogSource>) -> ServerConfig {
    ServerConfig {
        port: 0,
        api_key: Some(KEY.into()),
        shutdown_grace_ms: 1_000,
        data_dir: Some(data_dir.to_path_buf()),
        catalogs,
        ..Default::default()
    }
}

async fn start(config: ServerConfig) -> anyhow::Result<(RunningServer, Client)> {
    let no_model = Box::new(|| -> anyhow::Result<LoadedModel> {
        anyhow::bail!("this test serves catalogs only")
    });
    let server = sprout_server::start(config, SchedulerConfig::default(), no_model).await?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    Ok((server, client))
}

fn custom_catalog(dir: &Path, lines: &[&str]) -> PathBuf {
    let path = dir.join("custom.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

const CUSTOM: &[&str] = &[
    r#"{"id": "b1", "title": "Walden", "tags": {"genre": "essay"}}"#,
    r#"{"id": "b2", "title": "The Overstory", "description": "trees", "tags": {"genre": "novel"}}"#,
];

fn source(name: &str, path: &Path) -> CatalogSource {
    CatalogSource {
        name: name.into(),
        path: path.to_path_buf(),
    }
}

fn ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn categories(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"]["tags"]["category"].as_str().unwrap().to_string())
        .collect()
}

/// (status, error.param, error.code) of an error answer.
fn error_of((status, body): &(u16, Value)) -> (u16, &str, &str) {
    let error = &body["error"];
    (
        *status,
        error["param"].as_str().unwrap_or(""),
        error["code"].as_str().unwrap_or(""),
    )
}

/// (name, index_built) of every listed catalog.
async fn listed(client: &Client) -> Vec<(String, bool)> {
    let (status, body) = client.get("/v1/catalogs", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["index_built"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_are_listed_paged_and_searched() {
    let dir = tempfile::tempdir().unwrap();
    let custom = custom_catalog(dir.path(), CUSTOM);
    let ingested = Catalog::parse("x", CUSTOM[0], sprout_recommend::CatalogFormat::Jsonl).unwrap();
    layout::save_ingested(dir.path(), "shelf", &ingested, Path::new("x.jsonl"), |_| {}).unwrap();
    let (server, c) = start(config(dir.path(), vec![source("custom", &custom)]))
        .await
        .unwrap();

    // Behind the API key like every /v1 route.
    let anonymous = c.http.get(format!("{}/v1/catalogs", c.base)).send();
    assert_eq!(anonymous.await.unwrap().status(), 401);

    let (status, list) = c.get("/v1/catalogs", &[]).await;
    assert_eq!(status, 200);
    let eco = Catalog::eco();
    let data = list["data"].as_array().unwrap();
    let names: Vec<_> = data.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["custom", "eco", "shelf"]);
    assert_eq!(data[1]["items"], 107);
    assert_eq!(data[1]["content_hash"], eco.content_hash());
    assert_eq!(
        (data[0]["items"].as_u64(), data[2]["items"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(data.iter().all(|c| c["index_built"] == true), "{list}");

    // Paging.
    let (status, page) = c.get("/v1/catalogs/eco/items", &[]).await;
    assert_eq!((status, page["total"].as_u64()), (200, Some(107)));
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    let (_, tail) = c
        .get(
            "/v1/catalogs/eco/items",
            &[("offset", "100"), ("limit", "5")],
        )
        .await;
    let tail_ids: Vec<_> = tail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let expected: Vec<_> = eco.items()[100..105]
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(tail_ids, expected);
    assert_eq!(tail["items"][0], eco.items()[100].to_json());
    let (_, past) = c.get("/v1/catalogs/eco/items", &[("offset", "500")]).await;
    assert_eq!(
        (
            past["items"].as_array().unwrap().len(),
            past["total"].as_u64()
        ),
        (0, Some(107))
    );
    let (_, all) = c.get("/v1/catalogs/eco/items", &[("limit", "1000")]).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 107);
    let too_many = c.get("/v1/catalogs/eco/items", &[("limit", "1001")]).await;
    assert_eq!(error_of(&too_many), (400, "limit", ""));
    assert_eq!(
        too_many.1["error"]["message"],
        "`limit` must be from 1 to 1000, got 1001"
    );
    assert_eq!(too_many.1["error"]["type"], "invalid_request_error");
    for (param, value) in [("limit", "ten"), ("limit", "0"), ("offset", "-1")] {
        let refused = c.get("/v1/catalogs/eco/items", &[(param, value)]).await;
        assert_eq!(error_of(&refused), (400, param, ""), "{param}={value}");
    }

    // Search in Korean. BM25 over character n-grams: "분리수거" shares 분리 with 분리배출 and
    // 수거 with 수거함; the best match is the office recycling notice (MEDIA) and no ZERO_WASTE
    // item reaches the top 5: words alone cannot tell that 분리수거 is about sorting waste
    // (zero-waste-03, "투명 페트병 따로 배출하기", never says it). Dense retrieval should.
    let (status, found) = c.get("/v1/catalogs/eco/search", &[("q", "분리수거")]).await;
    assert_eq!(status, 200, "{found}");
    let found_ids = ids(&found);
    assert_eq!(found_ids.len(), 5);
    assert_eq!(found_ids[0], "eco-media-04");
    let scores: Vec<f64> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        found["results"][0]["item"],
        eco.items()[eco.index_of("eco-media-04").unwrap()].to_json()
    );
    // A Korean query on zero-waste habits: ZERO_WASTE items first.
    let (_, cups) = c
        .get(
            "/v1/catalogs/eco/search",
            &[("q", "일회용 컵 대신 텀블러"), ("k", "3")],
        )
        .await;
    assert_eq!(ids(&cups)[0], "eco-zero-waste-01");
    assert_eq!(categories(&cups), ["ZERO_WASTE"; 3]);
    let (_, zero_waste) = c
        .get(
            "/v1/catalogs/eco/search",
            &[("q", "분리수거"), ("filter", "category:ZERO_WASTE")],
        )
        .await;
    assert_eq!(ids(&zero_waste)[0], "eco-zero-waste-12");
    assert!(categories(&zero_waste).iter().all(|c| c == "ZERO_WASTE"));

    // Filters restrict; `key=value` works as `key:value`; several must all hold.
    let plogging = [
        ("q", "분리수거"),
        ("k", "10"),
        ("filter", "category:PLOGGING"),
    ];
    let (status, filtered) = c.get("/v1/catalogs/eco/search", &plogging).await;
    assert_eq!(status, 200);
    assert!(!ids(&filtered).is_empty());
    assert!(
        categories(&filtered).iter().all(|c| c == "PLOGGING"),
        "{filtered}"
    );
    assert!(ids(&filtered).contains(&"eco-plogging-12".to_string()));
    let (_, equals) = c
        .get(
            "/v1/catalogs/eco/search",
            &[
                ("q", "분리수거"),
                ("k", "10"),
                ("filter", "category=PLOGGING"),
            ],
        )
        .await;
    assert_eq!(equals, filtered);
    let (_, both) = c
        .get(
            "/v1/catalogs/eco/search",
            &[
                ("q", "쓰레기 줍기"),
                ("k", "20"),
                ("filter", "category:PLOGGING"),
                ("filter", "locations:바닷가"),
            ],
        )
        .await;
    let both = both["results"].as_array().unwrap();
    assert!(!both.is_empty());
    for result in both {
        let tags = &result["item"]["tags"];
        assert_eq!(tags["category"], "PLOGGING");
        assert!(
            tags["locations"]
                .as_array()
                .unwrap()
                .contains(&"바닷가".into()),
            "{tags}"
        );
    }
    let (_, books) = c
        .get("/v1/catalogs/custom/search", &[("q", "overstory trees")])
        .await;
    assert_eq!(ids(&books), ["b2"]);

    // Refusals.
    for path in ["/v1/catalogs/nope/items", "/v1/catalogs/nope/search"] {
        let missing = c.get(path, &[("q", "x")]).await;
        assert_eq!(
            error_of(&missing),
            (404, "name", "catalog_not_found"),
            "{path}"
        );
        assert_eq!(
            missing.1["error"]["message"],
            "the catalog `nope` does not exist (served: custom, eco, shelf)"
        );
    }
    let no_q = c.get("/v1/catalogs/eco/search", &[]).await;
    assert_eq!(error_of(&no_q), (400, "q", ""));
    assert_eq!(no_q.1["error"]["message"], "`q` is required");
    let blank_q = c.get("/v1/catalogs/eco/search", &[("q", "  ")]).await;
    assert_eq!(error_of(&blank_q), (400, "q", ""));
    let big_k = c
        .get("/v1/catalogs/eco/search", &[("q", "x"), ("k", "101")])
        .await;
    assert_eq!(error_of(&big_k), (400, "k", ""));
    let bad_filter = c
        .get(
            "/v1/catalogs/eco/search",
            &[("q", "x"), ("filter", "category")],
        )
        .await;
    assert_eq!(error_of(&bad_filter), (400, "filter", ""));
    let unknown = c
        .get("/v1/catalogs/eco/search", &[("q", "x"), ("top", "3")])
        .await;
    assert_eq!(error_of(&unknown), (400, "top", ""));

    let metrics = c.metrics().await;
    assert!(
        metrics.contains("\nsprout_catalog_index_builds_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nsprout_catalog_items{catalog=\"eco\"} 107\n"));
    assert!(metrics.contains("route=\"/v1/catalogs/{name}/search\",status=\"404\""));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_reused_across_restarts_until_the_catalog_changes() {
    let dir = tempfile::tempdir().unwrap();
    let custom = custom_catalog(dir.path(), CUSTOM);
    let run = |expected: Vec<(&'static str, bool)>, builds: u64| {
        let config = config(dir.path(), vec![source("custom", &custom)]);
        async move {
            let (server, c) = start(config).await.unwrap();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(n, b)| (n.to_string(), b))
                .collect();
            assert_eq!(listed(&c).await, expected);
            let metrics = c.metrics().await;
            let line = format!("\nsprout_catalog_index_builds_total {builds}\n");
            assert!(metrics.contains(&line), "{metrics}");
            server.shutdown().await.unwrap();
        }
    };
    run(vec![("custom", true), ("eco", true)], 2).await;
    run(vec![("custom", false), ("eco", false)], 0).await;
    // Same items in another order of keys and lines spacing: same content, still reused.
    custom_catalog(
        dir.path(),
        &[
            r#"{"title": "Walden", "id": "b1", "tags": {"genre": "essay"}}"#,
            "",
            CUSTOM[1],
        ],
    );
    run(vec![("custom", false), ("eco", false)], 0).await;
    custom_catalog(dir.path(), &[CUSTOM[0]]);
    run(vec![("custom", true), ("eco", false)], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_does_not_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"id\": \"a\", \"title\": \"A\"}\n{\"id\": \"b\"}\n",
    )
    .unwrap();
    let error = start(config(dir.path(), vec![source("broken", &broken)]))
        .await
        .err()
        .unwrap();
    assert_eq!(
        format!("{error:#}"),
        "loading catalogs: catalog \"broken\": line 2: item has no `title` (or it is empty)"
    );
    let custom = custom_catalog(dir.path(), CUSTOM);
    let error = start(config(dir.path(), vec![source("eco", &custom)]))
        .await
        .err()
        .unwrap();
    assert!(
        format!("{error:#}").contains("catalog \"eco\" is defined twice: built in and configured"),
        "{error:#}"
    );
}
