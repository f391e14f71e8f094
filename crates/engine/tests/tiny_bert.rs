//! A tiny random-weight BERT written here as a Hugging Face sentence-transformers directory
//! (config.json, model.safetensors with BertModel's names, a WordPiece tokenizer.json, modules)
//! and checked against a plain f64 forward pass written here: the config and tensor-name
//! translation, post-norm layers, exact GELU, absolute positions, bidirectional attention
//! across KV block boundaries, mean pooling without a final norm, batched == one by one, and
//! [CLS] … [SEP] tokenization without the file's padding and truncation.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sprout_engine::embedding::{EmbedOptions, EmbeddingModel, Task};
use sprout_engine::engine::{Engine, EngineConfig, StepInput};
use sprout_engine::model::load::load_source;
use sprout_engine::model::Model;
use sprout_engine::EngineError;

const D: usize = 64;
const HEADS: usize = 4;
const FFN: usize = 96;
const LAYERS: usize = 2;
const POSITIONS: usize = 40;
const EPS: f64 = 1e-12;

const VOCAB: [&str; 24] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "eco", "##s", "tree", ",", ".",
    "!", "the", "a", "green", "planet", "##ing", "plant", "water", "energy", "day", "every", "we",
];
const CLS: u32 = 2;
const SEP: u32 = 3;

/// Deterministic pseudo-random numbers in [offset - scale, offset + scale).
struct Lcg(u64);
impl Lcg {
    fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale + offset
            })
            .collect()
    }
}

/// The tiny model's tensors by Hugging Face name, row-major `[out, in]`.
struct Weights(Vec<(String, Vec<usize>, Vec<f32>)>);

impl Weights {
    fn random(seed: u64) -> Self {
        let mut r = Lcg(seed);
        let mut t = Vec::new();
        let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let n = shape.iter().product();
            t.push((name, shape, r.vec(n, scale, offset)));
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            vec![VOCAB.len(), D],
            0.5,
            0.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, D],
            0.3,
            0.0,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, D],
            0.3,
            0.0,
        );
        put("embeddings.LayerNorm.weight".into(), vec![D], 0.2, 1.0);
        put("embeddings.LayerNorm.bias".into(), vec![D], 0.1, 0.0);
        for l in 0..LAYERS {
            let p = |s: &str| format!("encoder.layer.{l}.{s}");
            for m in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
            ] {
                put(p(&format!("{m}.weight")), vec![D, D], 0.25, 0.0);
                put(p(&format!("{m}.bias")), vec![D], 0.2, 0.0);
            }
            put(p("attention.output.dense.weight"), vec![D, D], 0.2, 0.0);
            put(p("attention.output.dense.bias"), vec![D], 0.1, 0.0);
            put(p("attention.output.LayerNorm.weight"), vec![D], 0.2, 1.0);
            put(p("attention.output.LayerNorm.bias"), vec![D], 0.1, 0.0);
            put(p("intermediate.dense.weight"), vec![FFN, D], 0.25, 0.0);
            put(p("intermediate.dense.bias"), vec![FFN], 0.3, 0.0);
            put(p("output.dense.weight"), vec![D, FFN], 0.2, 0.0);
            put(p("output.dense.bias"), vec![D], 0.1, 0.0);
            put(p("output.LayerNorm.weight"), vec![D], 0.2, 1.0);
            put(p("output.LayerNorm.bias"), vec![D], 0.1, 0.0);
        }
        // Present in real checkpoints, unused by the encoder: must be skipped.
        put("pooler.dense.weight".into(), vec![D, D], 0.2, 0.0);
        put("pooler.dense.bias".into(), vec![D], 0.1, 0.0);
        Self(t)
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.0.iter().find(|t| t.0 == name).expect(name).2
    }
}

// ---------- the reference: one input, f64 throughout ----------

/// erf by Simpson's rule on 2/√π·e^(−t²) (2000 panels: ~1e-15 for |x| ≤ 6; beyond, ±1).
fn erf(x: f64) -> f64 {
    let a = x.abs().min(6.0);
    let n = 2000;
    let h = a / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(a);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    (s * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI).copysign(x)
}

fn layer_norm(x: &mut [f64], w: &[f32], b: &[f32]) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + EPS).sqrt();
    for ((v, &g), &b) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * g as f64 + b as f64;
    }
}

/// `W x + b` with W row-major `[out, in]`.
fn affine(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len())
        .zip(b)
        .map(|(row, &b)| row.iter().zip(x).map(|(a, v)| *a as f64 * v).sum::<f64>() + b as f64)
        .collect()
}

/// The last layer's hidden states of one input.
fn reference_hidden(w: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let row = |name: &str, r: usize| w.get(name)[r * D..(r + 1) * D].to_vec();
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .enumerate()
        .map(|(p, &t)| {
            let word = row("embeddings.word_embeddings.weight", t as usize);
            let pos = row("embeddings.position_embeddings.weight", p);
            let ty = row("embeddings.token_type_embeddings.weight", 0);
            let mut x: Vec<f64> = (0..D)
                .map(|i| word[i] as f64 + pos[i] as f64 + ty[i] as f64)
                .collect();
            layer_norm(
                &mut x,
                w.get("embeddings.LayerNorm.weight"),
                w.get("embeddings.LayerNorm.bias"),
            );
            x
        })
        .collect();
    let hd = D / HEADS;
    for l in 0..LAYERS {
        let g = |s: &str| w.get(&format!("encoder.layer.{l}.{s}"));
        let proj =
            |m: &str, x: &[f64]| affine(g(&format!("{m}.weight")), g(&format!("{m}.bias")), x);
        let qs: Vec<_> = xs.iter().map(|x| proj("attention.self.query", x)).collect();
        let ks: Vec<_> = xs.iter().map(|x| proj("attention.self.key", x)).collect();
        let vs: Vec<_> = xs.iter().map(|x| proj("attention.self.value", x)).collect();
        for (i, x) in xs.iter_mut().enumerate() {
            let mut ctx = vec![0f64; D];
            for h in 0..HEADS {
                let r = h * hd..(h + 1) * hd;
                // Every token sees every token of its input: no mask.
                let scores: Vec<f64> = ks
                    .iter()
                    .map(|k| {
                        qs[i][r.clone()]
                            .iter()
                            .zip(&k[r.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (p, v) in e.iter().zip(&vs) {
                    for (c, vv) in ctx[r.clone()].iter_mut().zip(&v[r.clone()]) {
                        *c += p / z * vv;
                    }
                }
            }
            let a = proj("attention.output.dense", &ctx);
            x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
            layer_norm(
                x,
                g("attention.output.LayerNorm.weight"),
                g("attention.output.LayerNorm.bias"),
            );
            let inner: Vec<f64> = proj("intermediate.dense", x)
                .into_iter()
                .map(|v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
                .collect();
            let out = proj("output.dense", &inner);
            x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
            layer_norm(x, g("output.LayerNorm.weight"), g("output.LayerNorm.bias"));
        }
    }
    xs
}

fn reference_mean(w: &Weights, ids: &[u32]) -> Vec<f64> {
    let h = reference_hidden(w, ids);
    (0..D)
        .map(|i| h.iter().map(|r| r[i]).sum::<f64>() / h.len() as f64)
        .collect()
}

// ---------- the directory ----------

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir =
        std::env::temp_dir().join(format!("sprout-bert-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    dir
}

fn write_json(path: &Path, v: serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Writes the model as sentence-transformers would save it; `hidden_act` goes to config.json.
fn write_dir(w: &Weights, tag: &str, hidden_act: &str) -> PathBuf {
    let dir = temp_dir(tag);
    write_json(
        &dir.join("config.json"),
        serde_json::json!({
            "architectures": ["BertModel"], "model_type": "bert", "hidden_act": hidden_act,
            "hidden_size": D, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
            "intermediate_size": FFN, "max_position_embeddings": POSITIONS,
            "layer_norm_eps": EPS, "type_vocab_size": 2, "vocab_size": VOCAB.len(),
            "pad_token_id": 0, "position_embedding_type": "absolute"
        }),
    );
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        w.0.iter()
            .map(|(n, s, v)| {
                (
                    n.clone(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
    let ids: Vec<u8> = (0..POSITIONS as i64)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    // An integer buffer real checkpoints carry: skipped, not refused for its dtype.
    views.push((
        "embeddings.position_ids".into(),
        TensorView::new(Dtype::I64, vec![1, POSITIONS], &ids).unwrap(),
    ));
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();

    let specials: Vec<serde_json::Value> = VOCAB[..5]
        .iter()
        .enumerate()
        .map(|(id, t)| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
        .collect();
    let special = |t: &str, id: u32| serde_json::json!({"id": t, "ids": [id], "tokens": [t]});
    write_json(
        &dir.join("tokenizer.json"),
        serde_json::json!({
            "version": "1.0",
            // As all-MiniLM-L6-v2's file does: pads and truncates unless switched off.
            "truncation": {"max_length": 6, "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
            "added_tokens": specials,
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                           "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {"[CLS]": special("[CLS]", CLS), "[SEP]": special("[SEP]", SEP)}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": vocab}
        }),
    );
    write_json(
        &dir.join("modules.json"),
        serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    );
    write_json(
        &dir.join("1_Pooling/config.json"),
        serde_json::json!({"word_embedding_dimension": D, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false}),
    );
    write_json(
        &dir.join("sentence_bert_config.json"),
        serde_json::json!({"max_seq_length": 16, "do_lower_case": false}),
    );
    write_json(
        &dir.join("config_sentence_transformers.json"),
        serde_json::json!({"__version__": {"sentence_transformers": "2.0.0"}}),
    );
    dir
}

fn max_rel_diff(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1.0);
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs() / scale)
        .fold(0.0, f64::max)
}

fn ids(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + seed * 5 + 3) % VOCAB.len() as u32)
        .collect()
}

#[test]
fn tiny_bert_pooled_states_match_the_f64_reference_across_kv_blocks() {
    let w = Weights::random(7);
    let dir = write_dir(&w, "pool", "gelu");
    let src = load_source(&dir, None, None).expect("the directory loads");
    assert!(src.tensors.contains_key("blk.1.layer_output_norm.bias"));
    assert!(!src.tensors.keys().any(|k| k.contains("pooler")));
    let model = Model::load(&src).expect("the BERT model loads");
    assert!(model.config.bidirectional);
    assert_eq!(model.config.context_tokens, POSITIONS);
    // Blocks of 4 tokens: the inputs span several blocks and end inside one.
    let mut e = Engine::new(
        model,
        &EngineConfig {
            threads: 2,
            kv_block_tokens: 4,
            kv_capacity_tokens: 256,
        },
    );
    let inputs = [ids(1, 1), ids(2, 5), ids(3, 13), ids(4, POSITIONS)];
    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let batched = e.pooled_hidden(&refs).expect("pools");
    for (input, got) in inputs.iter().zip(&batched) {
        let want = reference_mean(&w, input);
        let diff = max_rel_diff(got, &want);
        assert!(diff < 2e-5, "{} tokens: max difference {diff}", input.len());
        let one = e.pooled_hidden(&[input]).unwrap().remove(0);
        let diff = max_rel_diff(&one, &got.iter().map(|v| *v as f64).collect::<Vec<_>>());
        assert!(diff < 1e-5, "batched vs single: {diff}");
    }
    assert_eq!(e.sequence_count(), 0, "pooling frees its sequences");
    // Beyond the position table: refused, not a panic.
    let too_long = ids(5, POSITIONS + 1);
    assert!(e.pooled_hidden(&[&too_long]).is_err());
    // No language-model head.
    let s = e.add_sequence();
    let err = e
        .step(&[StepInput {
            seq: s,
            tokens: &[CLS, 5, SEP],
            want_logits: true,
        }])
        .unwrap_err();
    assert!(matches!(err, EngineError::Unsupported(_)), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tiny_bert_embeds_with_cls_sep_and_without_the_files_padding() {
    let w = Weights::random(11);
    let dir = write_dir(&w, "embed", "gelu");
    let mut m = EmbeddingModel::open(&dir, &EmbedOptions::default()).expect("opens");
    assert_eq!((m.dim(), m.max_tokens()), (D, 16));
    // Lowercased WordPiece between [CLS] and [SEP]; not padded to the file's 8.
    assert_eq!(
        m.tokenize("Hello, World!", Task::Raw),
        [CLS, 5, 10, 6, 12, SEP]
    );
    assert_eq!(
        m.tokenize("planting trees", Task::Raw),
        [CLS, 18, 17, 9, 8, SEP]
    );
    // Not truncated to the file's 6 either; unknown words are [UNK].
    let long = m.tokenize("Every day we save water and energy", Task::Raw);
    assert_eq!(long, [CLS, 22, 21, 23, 1, 19, 1, 20, SEP]);
    // No prompts in config_sentence_transformers.json: every task reads the text as is.
    assert_eq!(m.prompt(Task::Query), "");
    assert_eq!(
        m.tokenize("a tree", Task::Query),
        m.tokenize("a tree", Task::Raw)
    );
    // Cut to max_seq_length keeping [SEP].
    let cut = m.tokenize(&"green planet ".repeat(20), Task::Raw);
    assert_eq!(cut.len(), 16);
    assert_eq!((cut[0], cut[13], cut[14], cut[15]), (CLS, 15, 16, SEP));

    let texts = [
        "Hello, World!",
        "planting trees",
        "Every day we save water and energy",
    ];
    let got = m.embed(&texts, Task::Document).expect("embeds");
    for (text, v) in texts.iter().zip(&got) {
        let mean = reference_mean(&w, &m.tokenize(text, Task::Raw));
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        let want: Vec<f64> = mean.iter().map(|x| x / norm).collect();
        let diff = max_rel_diff(v, &want);
        assert!(diff < 2e-5, "{text:?}: max difference {diff}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bert_variants_we_do_not_implement_are_refused() {
    let w = Weights::random(3);
    let dir = write_dir(&w, "relu", "relu");
    let err = load_source(&dir, None, None).unwrap_err();
    assert!(matches!(err, EngineError::Unsupported(_)), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
