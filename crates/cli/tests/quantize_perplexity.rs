//! `sprout perplexity` on a tiny Hugging Face (safetensors) llama written here, loaded as F32,
//! converted to F16, and quantized on load to Q8_0 and Q4_K: the "test each quantization"
//! question answered with numbers, which must stay close to the F32 model's.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

const HIDDEN: usize = 256;
const FFN: usize = 512;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const VOCAB: usize = 256;

/// GPT-2's printable stand-ins for the 256 byte values (byte-level BPE vocabularies).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).expect("valid code point")
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": VOCAB, "tie_word_embeddings": false
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), serde_json::json!(b)))
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();

    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        (
            "model.embed_tokens.weight".into(),
            vec![VOCAB, HIDDEN],
            random(VOCAB * HIDDEN, 1, 1.0),
        ),
        ("model.norm.weight".into(), vec![HIDDEN], vec![1.0; HIDDEN]),
        (
            "lm_head.weight".into(),
            vec![VOCAB, HIDDEN],
            random(VOCAB * HIDDEN, 2, 0.05),
        ),
    ];
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let seed = 10 + l as u64 * 10;
        for (i, name) in ["q_proj", "k_proj", "v_proj", "o_proj"].iter().enumerate() {
            let w = random(HIDDEN * HIDDEN, seed + i as u64, 0.08);
            tensors.push((
                p(&format!("self_attn.{name}.weight")),
                vec![HIDDEN, HIDDEN],
                w,
            ));
        }
        tensors.push((
            p("mlp.gate_proj.weight"),
            vec![FFN, HIDDEN],
            random(FFN * HIDDEN, seed + 5, 0.08),
        ));
        tensors.push((
            p("mlp.up_proj.weight"),
            vec![FFN, HIDDEN],
            random(FFN * HIDDEN, seed + 6, 0.08),
        ));
        tensors.push((
            p("mlp.down_proj.weight"),
            vec![HIDDEN, FFN],
            random(FFN * HIDDEN, seed + 7, 0.06),
        ));
        tensors.push((p("input_layernorm.weight"), vec![HIDDEN], vec![1.0; HIDDEN]));
        tensors.push((
            p("post_attention_layernorm.weight"),
            vec![HIDDEN],
            vec![1.0; HIDDEN],
        ));
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn perplexity(dir: &Path, text: &Path, extra: &[&str]) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_sprout"))
        .args(["perplexity", "--json", "--ctx", "128", "-t", "2", "-m"])
        .arg(dir)
        .arg("-f")
        .arg(text)
        .args(extra)
        .output()
        .expect("sprout runs");
    assert!(
        out.status.success(),
        "{extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    v["perplexity"].as_f64().expect("perplexity is a number")
}

#[test]
fn perplexity_of_f16_q8_0_and_q4_k_stays_near_f32() {
    let dir: PathBuf = std::env::temp_dir().join(format!("sprout-ppl-{}", std::process::id()));
    write_model(&dir);
    let text = dir.join("text.txt");
    let prose = "Sprout recommends three eco challenges a day: carry a tumbler, take the stairs, \
                 and sort the recycling. 오늘의 챌린지는 텀블러 사용하기입니다. ";
    std::fs::write(&text, prose.repeat(8)).unwrap();

    let f32_ppl = perplexity(&dir, &text, &[]);
    let f16 = perplexity(&dir, &text, &["--dtype", "f16"]);
    let q8 = perplexity(&dir, &text, &["--quantize", "q8_0"]);
    let q4k = perplexity(&dir, &text, &["--quantize", "q4_k"]);
    eprintln!("| weights | perplexity |\n|---|---|\n| f32 | {f32_ppl:.4} |\n| f16 | {f16:.4} |\n| q8_0 | {q8:.4} |\n| q4_k | {q4k:.4} |");
    std::fs::remove_dir_all(&dir).ok();

    assert!(f32_ppl.is_finite() && f32_ppl > 1.0, "{f32_ppl}");
    let rel = |x: f64| (x - f32_ppl).abs() / f32_ppl;
    assert!(rel(f16) < 0.002, "f16 {f16} vs f32 {f32_ppl}");
    assert!(rel(q8) < 0.01, "q8_0 {q8} vs f32 {f32_ppl}");
    assert!(rel(q4k) < 0.05, "q4_k {q4k} vs f32 {f32_ppl}");
    assert!(q4k != f32_ppl, "q4_k must actually quantize");
}
