//! Hugging Face directories written here (config.json + safetensors) must load with GGUF names,
//! translated metadata, llama's q/k row permutation and Gemma 3's +1 norms; the real GGUF
//! models on this machine must parse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sprout_engine::gguf::Value;
use sprout_engine::model::load::load_source;
use sprout_engine::model::source::ModelSource;
use sprout_engine::model::Model;
use sprout_engine::quant::blocks::dequantize_row;
use sprout_engine::quant::GgmlType;

const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FFN: usize = 64;
const VOCAB: usize = 16;

/// A fresh empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("sprout-st-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tensor in HF layout (`shape` row-major, `[out, in]`) whose element `k` is `seed + k`,
/// stored as `dtype` (small integers are exact in BF16 up to 256; seeds keep values in range).
struct HfTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn values(shape: &[usize], seed: f32) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|k| seed + (k % 200) as f32 * 0.5).collect()
}

fn hf(name: &str, dtype: Dtype, shape: &[usize], seed: f32) -> HfTensor {
    let vals = values(shape, seed);
    let bytes = match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("test writes no {other:?}"),
    };
    HfTensor {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

fn write_safetensors(path: &Path, tensors: &[HfTensor]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn layer_tensors(l: usize, gemma: bool) -> Vec<HfTensor> {
    let p = |s: &str| format!("model.layers.{l}.{s}");
    let mut t = vec![
        hf(
            &p("self_attn.q_proj.weight"),
            Dtype::F32,
            &[HEADS * HEAD_DIM, HIDDEN],
            1.0,
        ),
        hf(
            &p("self_attn.k_proj.weight"),
            Dtype::F32,
            &[KV_HEADS * HEAD_DIM, HIDDEN],
            2.0,
        ),
        hf(
            &p("self_attn.v_proj.weight"),
            Dtype::F32,
            &[KV_HEADS * HEAD_DIM, HIDDEN],
            3.0,
        ),
        hf(
            &p("self_attn.o_proj.weight"),
            Dtype::BF16,
            &[HIDDEN, HEADS * HEAD_DIM],
            4.0,
        ),
        hf(&p("mlp.gate_proj.weight"), Dtype::BF16, &[FFN, HIDDEN], 5.0),
        hf(&p("mlp.up_proj.weight"), Dtype::BF16, &[FFN, HIDDEN], 6.0),
        hf(&p("mlp.down_proj.weight"), Dtype::BF16, &[HIDDEN, FFN], 7.0),
        hf(&p("input_layernorm.weight"), Dtype::BF16, &[HIDDEN], 0.25),
        hf(
            &p("post_attention_layernorm.weight"),
            Dtype::BF16,
            &[HIDDEN],
            0.5,
        ),
    ];
    if gemma {
        t.push(hf(
            &p("pre_feedforward_layernorm.weight"),
            Dtype::BF16,
            &[HIDDEN],
            0.75,
        ));
        t.push(hf(
            &p("post_feedforward_layernorm.weight"),
            Dtype::BF16,
            &[HIDDEN],
            -0.5,
        ));
        t.push(hf(
            &p("self_attn.q_norm.weight"),
            Dtype::BF16,
            &[HEAD_DIM],
            -1.0,
        ));
        t.push(hf(
            &p("self_attn.k_norm.weight"),
            Dtype::BF16,
            &[HEAD_DIM],
            1.5,
        ));
    } else {
        t.push(hf(
            &p("self_attn.rotary_emb.inv_freq"),
            Dtype::F32,
            &[HEAD_DIM / 2],
            0.0,
        ));
    }
    t
}

fn write_llama_dir(sharded: bool) -> PathBuf {
    let dir = temp_dir(if sharded { "llama-sharded" } else { "llama" });
    let config = serde_json::json!({
        "model_type": "mistral", "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": 2, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "vocab_size": VOCAB, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3]
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let mut first = vec![hf(
        "model.embed_tokens.weight",
        Dtype::BF16,
        &[VOCAB, HIDDEN],
        8.0,
    )];
    first.extend(layer_tensors(0, false));
    let mut second = layer_tensors(1, false);
    second.push(hf("model.norm.weight", Dtype::F32, &[HIDDEN], 9.0));
    second.push(hf("lm_head.weight", Dtype::F32, &[VOCAB, HIDDEN], 10.0));
    if sharded {
        write_safetensors(&dir.join("model-00001-of-00002.safetensors"), &first);
        write_safetensors(&dir.join("model-00002-of-00002.safetensors"), &second);
        let mut map = serde_json::Map::new();
        for (file, ts) in [
            ("model-00001-of-00002.safetensors", &first),
            ("model-00002-of-00002.safetensors", &second),
        ] {
            for t in ts.iter() {
                map.insert(t.name.clone(), file.into());
            }
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        // A stray file the index does not name must be ignored.
        write_safetensors(
            &dir.join("extra.safetensors"),
            &[hf("model.extra.weight", Dtype::F32, &[2], 0.0)],
        );
    } else {
        first.extend(second);
        write_safetensors(&dir.join("model.safetensors"), &first);
    }
    dir
}

fn f32s(src: &ModelSource, name: &str) -> Vec<f32> {
    let t = src.tensor(name).unwrap();
    let n = t.dims.iter().product();
    let mut out = vec![0f32; n];
    dequantize_row(t.ty, &t.data, &mut out);
    out
}

fn expected_names(layers: usize, gemma: bool) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["token_embd.weight", "output_norm.weight"]
        .map(String::from)
        .into();
    if !gemma {
        names.insert("output.weight".into());
    }
    let mut parts = vec![
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
        "attn_norm",
        "ffn_norm",
    ];
    if gemma {
        parts.extend([
            "post_attention_norm",
            "post_ffw_norm",
            "attn_q_norm",
            "attn_k_norm",
        ]);
    }
    for l in 0..layers {
        names.extend(parts.iter().map(|p| format!("blk.{l}.{p}.weight")));
    }
    names
}

fn check_llama(src: &ModelSource) {
    assert_eq!(
        src.tensors.keys().cloned().collect::<BTreeSet<_>>(),
        expected_names(2, false)
    );
    let m = &src.metadata;
    assert_eq!(src.architecture().unwrap(), "llama");
    assert_eq!(m["sprout.source"], Value::String("safetensors".into()));
    assert_eq!(m["sprout.tie_word_embeddings"], Value::Bool(false));
    assert_eq!(src.u64("llama.block_count").unwrap(), 2);
    assert_eq!(src.u64("llama.embedding_length").unwrap(), HIDDEN as u64);
    assert_eq!(src.u64("llama.feed_forward_length").unwrap(), FFN as u64);
    assert_eq!(src.u64("llama.attention.head_count").unwrap(), HEADS as u64);
    assert_eq!(
        src.u64("llama.attention.head_count_kv").unwrap(),
        KV_HEADS as u64
    );
    assert_eq!(
        src.u64("llama.attention.key_length").unwrap(),
        HEAD_DIM as u64
    );
    assert_eq!(
        src.u64("llama.attention.value_length").unwrap(),
        HEAD_DIM as u64
    );
    assert_eq!(src.u64("llama.context_length").unwrap(), 4096);
    assert_eq!(src.f32_opt("llama.rope.freq_base"), Some(500000.0));
    assert_eq!(
        src.f32_opt("llama.attention.layer_norm_rms_epsilon"),
        Some(1e-5)
    );
    assert_eq!(src.u64("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(src.u64("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert!(src
        .str_opt("sprout.tokenizer_json")
        .unwrap()
        .ends_with("tokenizer.json"));

    // Shapes are reversed into ggml order; dtypes are kept.
    let gate = src.tensor("blk.1.ffn_gate.weight").unwrap();
    assert_eq!(
        (gate.ty, &gate.dims[..]),
        (GgmlType::BF16, &[HIDDEN, FFN][..])
    );
    assert_eq!(
        f32s(src, "blk.1.ffn_gate.weight"),
        values(&[FFN, HIDDEN], 5.0)
    );
    assert_eq!(
        src.tensor("token_embd.weight").unwrap().dims,
        vec![HIDDEN, VOCAB]
    );
    assert_eq!(
        f32s(src, "blk.0.attn_v.weight"),
        values(&[KV_HEADS * HEAD_DIM, HIDDEN], 3.0)
    );
    assert_eq!(f32s(src, "blk.0.attn_norm.weight"), values(&[HIDDEN], 0.25));

    // q and k rows: GGUF row h*D + 2i + j is HF row h*D + j*D/2 + i.
    for (name, heads, seed) in [
        ("blk.0.attn_q.weight", HEADS, 1.0),
        ("blk.1.attn_k.weight", KV_HEADS, 2.0),
    ] {
        let hf_vals = values(&[heads * HEAD_DIM, HIDDEN], seed);
        let got = f32s(src, name);
        for h in 0..heads {
            for i in 0..HEAD_DIM / 2 {
                for j in 0..2 {
                    let dst = h * HEAD_DIM + 2 * i + j;
                    let from = h * HEAD_DIM + j * HEAD_DIM / 2 + i;
                    assert_eq!(
                        got[dst * HIDDEN..(dst + 1) * HIDDEN],
                        hf_vals[from * HIDDEN..(from + 1) * HIDDEN]
                    );
                }
            }
        }
        assert_ne!(got, hf_vals, "{name} was not permuted");
    }
}

#[test]
fn llama_directory_loads_with_gguf_names_and_permuted_qk() {
    let dir = write_llama_dir(false);
    let src = load_source(&dir, None, None).unwrap();
    check_llama(&src);
    // The model code accepts the translated source as it is.
    let model = Model::load(&src).unwrap();
    assert_eq!((model.config.n_layers, model.config.vocab_size), (2, VOCAB));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sharded_llama_directory_loads_the_same() {
    let dir = write_llama_dir(true);
    let src = load_source(&dir, None, None).unwrap();
    check_llama(&src);
    assert!(!src.tensors.keys().any(|k| k.contains("extra")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dtype_and_quantize_apply_to_matrices_only() {
    let dir = write_llama_dir(false);
    let src = load_source(&dir, Some(GgmlType::F16), None).unwrap();
    assert_eq!(src.tensor("blk.0.ffn_up.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(src.tensor("output.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(
        src.tensor("blk.0.attn_norm.weight").unwrap().ty,
        GgmlType::BF16
    );
    // Values like 5.5 are exact in f16, so the conversion must be lossless here.
    assert_eq!(
        f32s(&src, "blk.0.ffn_up.weight"),
        values(&[FFN, HIDDEN], 6.0)
    );

    let src = load_source(&dir, None, Some(GgmlType::Q8_0)).unwrap();
    for name in [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.1.ffn_down.weight",
        "output.weight",
    ] {
        assert_eq!(src.tensor(name).unwrap().ty, GgmlType::Q8_0, "{name}");
    }
    assert_eq!(src.tensor("output_norm.weight").unwrap().ty, GgmlType::F32);
    let want = values(&[FFN, HIDDEN], 6.0);
    for (a, b) in f32s(&src, "blk.0.ffn_up.weight").iter().zip(&want) {
        // Q8_0 rounds to a step of amax/127 per 32 values; amax here is at most 105.5.
        assert!((a - b).abs() <= 0.5 * 105.5 / 127.0 + 1e-3, "{a} vs {b}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gemma3_directory_gets_plus_one_norms_and_its_keys() {
    let dir = temp_dir("gemma3");
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": HIDDEN, "intermediate_size": FFN,
            "num_hidden_layers": 2, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "head_dim": HEAD_DIM, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
            "query_pre_attn_scalar": 256, "layer_types": ["sliding_attention", "full_attention"],
            "vocab_size": VOCAB
        }
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut tensors = vec![
        hf(
            "language_model.model.embed_tokens.weight",
            Dtype::BF16,
            &[VOCAB, HIDDEN],
            8.0,
        ),
        hf(
            "language_model.model.norm.weight",
            Dtype::BF16,
            &[HIDDEN],
            0.125,
        ),
        hf(
            "vision_tower.vision_model.embeddings.patch_embedding.weight",
            Dtype::F32,
            &[4, 4],
            0.0,
        ),
    ];
    for l in 0..2 {
        tensors.extend(layer_tensors(l, true).into_iter().map(|mut t| {
            t.name = format!("language_model.{}", t.name);
            t
        }));
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let src = load_source(&dir, None, None).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(
        src.tensors.keys().cloned().collect::<BTreeSet<_>>(),
        expected_names(2, true)
    );
    assert_eq!(src.architecture().unwrap(), "gemma3");
    assert_eq!(
        src.get("sprout.tie_word_embeddings"),
        Some(&Value::Bool(true))
    );
    assert_eq!(src.u64("gemma3.attention.sliding_window").unwrap(), 512);
    assert_eq!(
        src.u64("gemma3.attention.sliding_window_pattern").unwrap(),
        2
    );
    assert_eq!(
        src.u64("gemma3.attention.key_length").unwrap(),
        HEAD_DIM as u64
    );
    assert_eq!(src.f32_opt("gemma3.rope.local.freq_base"), Some(10000.0));
    assert_eq!(src.f32_opt("gemma3.rope.freq_base"), Some(1_000_000.0));
    assert_eq!(
        src.f32_opt("gemma3.attention.query_pre_attn_scalar"),
        Some(256.0)
    );

    let plus_one = |hf_seed: f32, len: usize| {
        values(&[len], hf_seed)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>()
    };
    let norms: BTreeMap<&str, (f32, usize)> = [
        ("blk.1.attn_norm.weight", (0.25, HIDDEN)),
        ("blk.1.post_attention_norm.weight", (0.5, HIDDEN)),
        ("blk.1.ffn_norm.weight", (0.75, HIDDEN)),
        ("blk.1.post_ffw_norm.weight", (-0.5, HIDDEN)),
        ("blk.0.attn_q_norm.weight", (-1.0, HEAD_DIM)),
        ("blk.0.attn_k_norm.weight", (1.5, HEAD_DIM)),
        ("output_norm.weight", (0.125, HIDDEN)),
    ]
    .into();
    for (name, (seed, len)) in norms {
        assert_eq!(src.tensor(name).unwrap().ty, GgmlType::F32, "{name}");
        assert_eq!(f32s(&src, name), plus_one(seed, len), "{name}");
    }
    let model = Model::load(&src).unwrap();
    assert_eq!(
        (model.config.head_dim, model.config.sliding_pattern),
        (HEAD_DIM, 2)
    );
    // Gemma uses NeoX RoPE: q rows stay in Hugging Face order.
    assert_eq!(
        f32s(&src, "blk.0.attn_q.weight"),
        values(&[HEADS * HEAD_DIM, HIDDEN], 1.0)
    );
}

#[test]
fn broken_directories_are_errors() {
    let dir = temp_dir("broken");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 8}"#,
    )
    .unwrap();
    let err = load_source(&dir, None, None).unwrap_err().to_string();
    assert!(err.contains("num_attention_heads"), "{err}");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    let err = load_source(&dir, None, None).unwrap_err().to_string();
    assert!(err.contains("t5"), "{err}");
    let index = r#"{"weight_map": {"a": "../../etc/passwd"}}"#;
    std::fs::write(dir.join("config.json"), write_llama_config()).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let err = load_source(&dir, None, None).unwrap_err().to_string();
    assert!(err.contains("bad shard name"), "{err}");
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    let err = load_source(&dir, None, None).unwrap_err().to_string();
    assert!(err.contains("no safetensors weights"), "{err}");
    std::fs::write(
        dir.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xff{}",
    )
    .unwrap();
    assert!(load_source(&dir, None, None).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn write_llama_config() -> String {
    serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": 1,
        "num_attention_heads": HEADS
    })
    .to_string()
}

#[test]
fn real_gguf_models_parse() {
    // (env var, file, architecture, tensors, tokens, layers): counted by an independent header reader.
    let models = [
        (
            "SPROUT_TEST_QWEN",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "qwen2",
            291,
            151_936,
            24,
        ),
        (
            "SPROUT_TEST_GEMMA",
            "gemma-3-270m-q4_k_m.gguf",
            "gemma3",
            236,
            262_144,
            18,
        ),
    ];
    for (var, file, arch, n_tensors, n_tokens, n_layers) in models {
        let path = std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new("/work/models").join(file));
        if !path.is_file() {
            assert!(
                std::env::var_os("SPROUT_REQUIRE_MODELS").is_none(),
                "{var}: {} missing",
                path.display()
            );
            eprintln!("skipping {}: not present", path.display());
            continue;
        }
        let src = load_source(&path, None, None).unwrap();
        assert_eq!(src.architecture().unwrap(), arch);
        assert_eq!(src.tensors.len(), n_tensors, "{file}");
        let tokens = src
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(tokens.len(), n_tokens, "{file}");
        assert_eq!(src.u64(&format!("{arch}.block_count")).unwrap(), n_layers);
        let embd = src.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.dims[1], n_tokens, "{file}");
    }
}
