//! Hostile GGUF input: truncations, bit flips and hand-patched headers must all come back as
//! `Ok` or `Err(InvalidModel)` from the parser — never a panic, an out-of-bounds read or a huge
//! allocation — and the writer's files must read back exactly.

use sprout_engine::gguf::{self, GgufFile, Value};
use sprout_engine::quant::GgmlType;
use sprout_engine::EngineError;

/// A hand-encoded tensor entry, free to carry values the writer refuses.
struct RawTensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

fn raw(name: &str, dims: &[u64], ty: GgmlType, offset: u64) -> RawTensor {
    RawTensor {
        name: name.as_bytes().to_vec(),
        dims: dims.to_vec(),
        ty: ty.id(),
        offset,
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// One metadata entry: key, type id, encoded value.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, key.as_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    kv(key, 4, &v.to_le_bytes())
}

/// Encodes a GGUF file by hand: header, `kvs`, tensor entries, padding to `alignment`, then
/// `data_len` bytes of data (value = byte index).
fn build(
    version: u32,
    kvs: &[Vec<u8>],
    tensors: &[RawTensor],
    alignment: usize,
    data_len: usize,
) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    kvs.iter().for_each(|k| out.extend_from_slice(k));
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        t.dims
            .iter()
            .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
        out.extend_from_slice(&t.ty.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(alignment), 0);
    out.extend((0..data_len).map(|i| i as u8));
    out
}

/// Tensors as the writer takes them: name, type, dims, bytes.
type Tensors = Vec<(String, GgmlType, Vec<usize>, Vec<u8>)>;

/// A small valid model written by the crate's writer.
fn valid_file() -> (Vec<(String, Value)>, Tensors, Vec<u8>) {
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".to_string(), Value::U32(1)),
        ("llama.rope.freq_base".to_string(), Value::F32(10000.0)),
        ("x.flag".to_string(), Value::Bool(true)),
        ("x.big".to_string(), Value::U64(u64::MAX)),
        ("x.neg".to_string(), Value::I64(-5)),
        ("x.f64".to_string(), Value::F64(0.25)),
        (
            "x.small".to_string(),
            Value::Array(vec![Value::I8(-1), Value::I8(2)]),
        ),
        ("x.u16".to_string(), Value::U16(7)),
        ("x.i16".to_string(), Value::I16(-7)),
        ("x.i32".to_string(), Value::I32(-70000)),
        ("x.u8".to_string(), Value::U8(200)),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(
                ["<s>", "a", "b", "ünï"]
                    .iter()
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        ),
        (
            "x.nested".to_string(),
            Value::Array(vec![
                Value::Array(vec![Value::U32(1)]),
                Value::Array(vec![]),
            ]),
        ),
    ];
    let tensors = vec![
        (
            "token_embd.weight".to_string(),
            GgmlType::F32,
            vec![8, 2],
            (0..64u8).collect(),
        ),
        (
            "blk.0.attn_q.weight".to_string(),
            GgmlType::Q8_0,
            vec![32, 2],
            (0..68u8).map(|b| b ^ 0x5a).collect(),
        ),
        (
            "output_norm.weight".to_string(),
            GgmlType::F16,
            vec![3],
            vec![1, 2, 3, 4, 5, 6],
        ),
    ];
    let mut bytes = Vec::new();
    gguf::write_gguf(&mut bytes, &meta, &tensors).unwrap();
    (meta, tensors, bytes)
}

/// Parses `bytes`; an Ok result must describe only tensors that lie inside the bytes.
fn parse_checked(bytes: &[u8]) -> Result<GgufFile, EngineError> {
    let f = GgufFile::parse(bytes)?;
    for t in &f.tensors {
        let end = f.data_offset + t.offset + t.n_bytes;
        assert!(
            end <= bytes.len(),
            "tensor {} ends at {end} past {}",
            t.name,
            bytes.len()
        );
        assert_eq!(t.offset % f.alignment, 0);
    }
    Ok(f)
}

fn expect_invalid(bytes: &[u8], needle: &str) {
    match GgufFile::parse(bytes) {
        Err(EngineError::InvalidModel(msg)) => {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
        }
        Err(other) => panic!("expected InvalidModel containing {needle:?}, got {other}"),
        Ok(_) => panic!("expected an error containing {needle:?}, parse succeeded"),
    }
}

#[test]
fn writer_round_trips_through_reader_and_mmap() {
    let (meta, tensors, bytes) = valid_file();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.metadata.len(), meta.len());
    for (k, v) in &meta {
        assert_eq!(&f.metadata[k], v, "metadata {k}");
    }
    assert_eq!(f.tensors.len(), tensors.len());
    for (info, (name, ty, dims, data)) in f.tensors.iter().zip(&tensors) {
        assert_eq!(
            (&info.name, info.ty, &info.dims, info.n_bytes),
            (name, *ty, dims, data.len())
        );
        let start = f.data_offset + info.offset;
        assert_eq!(&bytes[start..start + info.n_bytes], &data[..]);
    }
    let path =
        std::env::temp_dir().join(format!("sprout-gguf-roundtrip-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let src = gguf::open(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(src.architecture().unwrap(), "llama");
    assert_eq!(src.u64("llama.block_count").unwrap(), 1);
    for (name, ty, dims, data) in &tensors {
        let t = src.tensor(name).unwrap();
        assert_eq!((t.ty, &t.dims, &t.data[..]), (*ty, dims, &data[..]));
    }
}

#[test]
fn writer_matches_hand_encoding() {
    let meta = [("a".to_string(), Value::U32(9))];
    let tensors = [
        ("t0".to_string(), GgmlType::F32, vec![3], vec![7u8; 12]),
        ("t1".to_string(), GgmlType::F16, vec![2, 2], vec![1u8; 8]),
    ];
    let mut written = Vec::new();
    gguf::write_gguf(&mut written, &meta, &tensors).unwrap();
    let mut by_hand = build(
        3,
        &[kv_u32("a", 9)],
        &[
            raw("t0", &[3], GgmlType::F32, 0),
            raw("t1", &[2, 2], GgmlType::F16, 32),
        ],
        32,
        0,
    );
    by_hand.extend([7u8; 12]);
    by_hand.extend([0u8; 20]);
    by_hand.extend([1u8; 8]);
    assert_eq!(written, by_hand);
}

#[test]
fn every_truncation_is_an_error() {
    let (_, _, bytes) = valid_file();
    for len in 0..bytes.len() {
        assert!(
            parse_checked(&bytes[..len]).is_err(),
            "truncated to {len} bytes parsed"
        );
    }
    assert!(parse_checked(&bytes).is_ok());
}

#[test]
fn random_bit_flips_never_panic() {
    let (_, _, bytes) = valid_file();
    // xorshift64, fixed seed: the same cases every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % b.len() as u64) as usize;
            b[at] ^= 1 << (next() % 8);
        }
        match parse_checked(&b) {
            Ok(_) => ok += 1,
            Err(EngineError::InvalidModel(_)) => err += 1,
            Err(other) => panic!("bit flip gave a non-model error: {other}"),
        }
    }
    // Flips in tensor data are harmless; flips in the header mostly are not.
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

#[test]
fn every_single_byte_overwrite_of_the_header_is_handled() {
    let (_, _, bytes) = valid_file();
    let header_len = GgufFile::parse(&bytes).unwrap().data_offset;
    for at in 0..header_len {
        for v in [0x00, 0xff, 0x7f, 0x80, 0x01] {
            let mut b = bytes.clone();
            b[at] = v;
            let _ = parse_checked(&b);
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    let (_, _, bytes) = valid_file();
    let mut b = bytes.clone();
    b[0] = b'X';
    expect_invalid(&b, "bad magic");
    expect_invalid(b"GG", "bad magic");
    for v in [0u32, 1, 4, 0x0300_0000] {
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        expect_invalid(&b, &format!("version {v}"));
    }
    let v2 = build(
        2,
        &[kv_u32("a", 1)],
        &[raw("t", &[4], GgmlType::F32, 0)],
        32,
        16,
    );
    assert_eq!(parse_checked(&v2).unwrap().version, 2);
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    let (_, _, bytes) = valid_file();
    for n in [u64::MAX, u64::MAX / 2, 1 << 40, bytes.len() as u64] {
        let mut b = bytes.clone();
        b[8..16].copy_from_slice(&n.to_le_bytes());
        expect_invalid(&b, "tensor count");
        let mut b = bytes.clone();
        b[16..24].copy_from_slice(&n.to_le_bytes());
        expect_invalid(&b, "metadata count");
    }
}

#[test]
fn string_and_array_lengths_past_the_end() {
    // The first key's length sits right after the 24-byte header.
    let (_, _, bytes) = valid_file();
    let mut b = bytes.clone();
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_invalid(&b, "runs past the end");

    let mut long = kv("s", 8, &1000u64.to_le_bytes());
    long.extend_from_slice(b"short");
    expect_invalid(&build(3, &[long], &[], 32, 0), "string length 1000");

    for (elem_ty, n) in [(0u32, u64::MAX), (8, 1 << 20), (4, 1000), (9, 1 << 40)] {
        let mut value = elem_ty.to_le_bytes().to_vec();
        value.extend_from_slice(&n.to_le_bytes());
        value.extend_from_slice(&[0u8; 16]);
        expect_invalid(
            &build(3, &[kv("arr", 9, &value)], &[], 32, 0),
            "array length",
        );
    }
}

#[test]
fn unknown_value_types_and_deep_nesting() {
    expect_invalid(
        &build(3, &[kv("k", 13, &[0; 8])], &[], 32, 0),
        "unknown value type 13",
    );
    expect_invalid(
        &build(3, &[kv("k", u32::MAX, &[0; 8])], &[], 32, 0),
        "unknown value type",
    );
    let mut value = 77u32.to_le_bytes().to_vec();
    value.extend_from_slice(&1u64.to_le_bytes());
    value.push(0);
    expect_invalid(
        &build(3, &[kv("k", 9, &value)], &[], 32, 0),
        "unknown array element type 77",
    );
    expect_invalid(&build(3, &[kv("k", 7, &[2])], &[], 32, 0), "bool byte 2");

    // Array of array of array: one level deeper than any real file.
    let deep = Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::U8(1)])])]);
    let mut b = Vec::new();
    gguf::write_gguf(&mut b, &[("deep".to_string(), deep)], &[]).unwrap();
    expect_invalid(&b, "nested deeper");
    // Self-similar nesting that would recurse forever without the depth limit.
    let mut value = Vec::new();
    for _ in 0..10_000 {
        value.extend_from_slice(&9u32.to_le_bytes());
        value.extend_from_slice(&1u64.to_le_bytes());
    }
    expect_invalid(
        &build(3, &[kv("k", 9, &value)], &[], 32, 0),
        "nested deeper",
    );
}

#[test]
fn keys_and_names_must_be_unique_utf8() {
    expect_invalid(
        &build(3, &[kv_u32("a", 1), kv_u32("a", 2)], &[], 32, 0),
        "duplicate metadata key a",
    );
    let mut bad_key = kv_u32("k", 1);
    bad_key[8] = 0xff;
    expect_invalid(&build(3, &[bad_key], &[], 32, 0), "UTF-8");
    let twice = [
        raw("t", &[4], GgmlType::F32, 0),
        raw("t", &[4], GgmlType::F32, 32),
    ];
    expect_invalid(&build(3, &[], &twice, 32, 64), "duplicate tensor name t");
    let mut bad_name = raw("t", &[4], GgmlType::F32, 0);
    bad_name.name = vec![0xc3, 0x28];
    expect_invalid(
        &build(3, &[], &[bad_name], 32, 16),
        "tensor name is not valid UTF-8",
    );
}

#[test]
fn tensor_entries_are_checked() {
    let one = |t: RawTensor, data: usize| build(3, &[], &[t], 32, data);
    let mut unknown = raw("t", &[4], GgmlType::F32, 0);
    unknown.ty = 99;
    expect_invalid(&one(unknown, 16), "type id 99");
    expect_invalid(
        &one(raw("t", &[1, 1, 1, 1, 1], GgmlType::F32, 0), 4),
        "5 dimensions",
    );
    expect_invalid(&one(raw("t", &[], GgmlType::F32, 0), 4), "0 dimensions");
    expect_invalid(
        &one(raw("t", &[4, 0], GgmlType::F32, 0), 16),
        "dimension 0 is invalid",
    );
    expect_invalid(
        &one(raw("t", &[32, 1 << 62, 1 << 62], GgmlType::Q8_0, 0), 34),
        "overflows",
    );
    expect_invalid(
        &one(raw("t", &[u64::MAX, 2], GgmlType::F32, 0), 34),
        "overflows",
    );
    expect_invalid(
        &one(raw("t", &[31], GgmlType::Q8_0, 0), 34),
        "not a whole number of q8_0 blocks",
    );
    expect_invalid(
        &one(raw("t", &[300], GgmlType::Q4K, 0), 1000),
        "not a whole number of q4_k blocks",
    );
    expect_invalid(
        &one(raw("t", &[4], GgmlType::F32, 4), 64),
        "not a multiple of the alignment 32",
    );
    expect_invalid(&one(raw("t", &[4], GgmlType::F32, 32), 40), "past the end");
    expect_invalid(
        &one(raw("t", &[4], GgmlType::F32, 1 << 63), 40),
        "past the end",
    );
    expect_invalid(
        &one(raw("t", &[4, 4], GgmlType::F32, 0), 63),
        "past the end",
    );
    assert!(parse_checked(&one(raw("t", &[4, 4], GgmlType::F32, 0), 64)).is_ok());

    let overlapping = [
        raw("a", &[16], GgmlType::F32, 0),
        raw("b", &[4], GgmlType::F32, 32),
    ];
    expect_invalid(&build(3, &[], &overlapping, 32, 128), "overlap");
    let same_start = [
        raw("a", &[4], GgmlType::F32, 32),
        raw("b", &[4], GgmlType::F32, 32),
    ];
    expect_invalid(&build(3, &[], &same_start, 32, 128), "overlap");
    let adjacent = [
        raw("a", &[8], GgmlType::F32, 0),
        raw("b", &[4], GgmlType::F32, 32),
    ];
    assert!(parse_checked(&build(3, &[], &adjacent, 32, 48)).is_ok());
}

#[test]
fn alignment_key_is_checked_and_honoured() {
    let t = [raw("t", &[4], GgmlType::F32, 0)];
    expect_invalid(
        &build(3, &[kv_u32("general.alignment", 0)], &t, 32, 16),
        "not a power of two",
    );
    expect_invalid(
        &build(3, &[kv_u32("general.alignment", 48)], &t, 48, 16),
        "not a power of two",
    );
    expect_invalid(
        &build(3, &[kv("general.alignment", 8, &[0; 8])], &t, 32, 16),
        "not a power of two",
    );
    let f = parse_checked(&build(3, &[kv_u32("general.alignment", 64)], &t, 64, 16)).unwrap();
    assert_eq!((f.alignment, f.data_offset % 64), (64, 0));
    // The writer honours the key too, and its output reads back.
    let meta = [("general.alignment".to_string(), Value::U32(128))];
    let tensors = [
        ("a".to_string(), GgmlType::F32, vec![1], vec![1u8; 4]),
        ("b".to_string(), GgmlType::F32, vec![1], vec![2u8; 4]),
    ];
    let mut b = Vec::new();
    gguf::write_gguf(&mut b, &meta, &tensors).unwrap();
    let f = parse_checked(&b).unwrap();
    assert_eq!(
        (f.alignment, f.data_offset % 128, f.tensors[1].offset),
        (128, 0, 128)
    );
}

#[test]
fn writer_refuses_inconsistent_input() {
    let w = |m: &[(String, Value)], t: &[(String, GgmlType, Vec<usize>, Vec<u8>)]| {
        gguf::write_gguf(Vec::new(), m, t)
    };
    assert!(w(&[], &[("t".into(), GgmlType::F32, vec![2], vec![0; 4])]).is_err());
    assert!(w(&[], &[("t".into(), GgmlType::Q8_0, vec![31], vec![0; 34])]).is_err());
    assert!(w(&[], &[("t".into(), GgmlType::F32, vec![], vec![])]).is_err());
    let mixed = Value::Array(vec![Value::U8(1), Value::String("x".into())]);
    assert!(w(&[("m".into(), mixed)], &[]).is_err());
    assert!(w(&[("general.alignment".into(), Value::U32(3))], &[]).is_err());
}
