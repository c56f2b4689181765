"""Tiny random GLiNER-Relex reference checkpoints built fully offline, and the reference forward.

Test helpers (no tests here). Three pieces:

- `build_tokenizer_dir(path)`: a small SentencePiece unigram tokenizer trained on generated English,
  saved as a DeBERTa-v3-style tokenizer directory (ids 0-3 = [PAD] [CLS] [SEP] [UNK]);
  `build_wordpiece_tokenizer_dir(path)`: an uncased BERT WordPiece tokenizer over the same text.
- `build_relex_model(path, seed, std, backbone=..., **overrides)`: a tiny DeBERTa-v3-like (default)
  or BERT backbone plus a gliner
  span-relex model built through gliner's own API, every parameter re-drawn at `std` (GUIDE §4, §6),
  the last layer of each head then calibrated so logits spread over a usable range, saved with
  safetensors and reloaded strictly; returns the model loaded from disk.
- `reference_forward(model, texts, labels, relations, ...)`: the reference's own batch preparation
  and nn forward (eval, no grad); returns the model inputs and raw outputs as numpy arrays.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torch_fixtures import redraw_weights

from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gliner = pytest.importorskip("gliner")
spm = pytest.importorskip("sentencepiece")

from gliner import GLiNER, GLiNERConfig  # noqa: E402
from gliner.config import BaseGLiNERConfig, UniEncoderRelexConfig  # noqa: E402

__all__ = [
    "DEFAULT_BERT_ENCODER",
    "DEFAULT_ENCODER",
    "DEFAULT_GLINER",
    "build_tokenizer_dir",
    "build_wordpiece_tokenizer_dir",
    "build_relex_model",
    "reference_forward",
    "state_dicts_equal",
]

# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

_FIRST = (
    "Alice Bob Carlos Maria John Wei Fatima Olga Pierre Hiroshi Ana Lucas Sofia Ahmed Emma Noah Liam "
    "Yuki Priya Kwame Ingrid Mateo Chloe Dmitri Amara Jonas Elena Ravi Zara Oscar Helga Tomasz Isabel "
    "Kenji Leila Victor Quentin Xavier Ursula Beatrix"
).split()
_LAST = (
    "Smith Garcia Chen Novak Dubois Tanaka Okafor Schmidt Rossi Kowalski Silva Ivanova Patel Moreau "
    "Johansson Haddad Nguyen Murphy Fischer Costa Yamamoto Lindqvist Mensah Petrov Alvarez Quinn Walker"
).split()
_ORG = [
    "Google", "Microsoft", "Apple", "Siemens", "Toyota", "the United Nations", "Oxford University",
    "the World Bank", "Nokia", "Airbus", "Samsung", "the Red Cross", "Stanford University", "Volvo",
    "Reuters", "the BBC", "Greenpeace", "Deutsche Bank", "Sony", "Unilever", "the European Commission",
    "Harvard University", "Philips", "Nestle", "Zenith Labs", "Quantum Dynamics", "Bluewave Energy",
]
_LOC = [
    "Paris", "London", "Berlin", "Tokyo", "Madrid", "Rome", "Warsaw", "Lagos", "Nairobi", "Cairo",
    "Mumbai", "Beijing", "Sydney", "Toronto", "Chicago", "Boston", "Lisbon", "Vienna", "Prague",
    "Oslo", "Stockholm", "Helsinki", "Dublin", "Zurich", "Geneva", "Seoul", "Lima", "Quito",
    "France", "Germany", "Japan", "Spain", "Italy", "Poland", "Nigeria", "Kenya", "Egypt", "India",
    "China", "Australia", "Canada", "Brazil", "Mexico", "Norway", "Sweden", "Finland",
]
_MONTH = "January February March April May June July August September October November December".split()
_TITLE = (
    "engineer scientist director manager teacher journalist doctor lawyer professor researcher "
    "designer analyst founder chairman architect"
).split()
_TOPIC = (
    "climate policy, renewable energy, machine learning, public health, trade agreements, urban "
    "transport, quantum computing, food security, space exploration, water supply"
).split(", ")
_TEMPLATES = [
    "{per} works at {org} in {loc}.",
    "{per} joined {org} as a {title} in {month} {year}.",
    "{org} opened a new office in {loc} on {day} {month} {year}.",
    "{per} was born in {loc} on {month} {day}, {year}.",
    "{per}, a {title} at {org}, lives in {loc}.",
    "In {year}, {org} acquired {org2} for {money} million dollars.",
    "{per} met {per2} in {loc} to discuss {topic}.",
    "The headquarters of {org} are located in {loc}.",
    "{per} founded {org} in {year} together with {per2}.",
    "{org} announced a partnership with {org2} on {weekday}.",
    "According to {org}, {per} will visit {loc} next {month}.",
    "{per} studied at {org} before moving to {loc} in {year}.",
    "On {weekday}, {per} gave a talk about {topic} at {org}.",
    "{per2} is the {title} of {org}, which is based in {loc}.",
    "{loc} hosted a conference on {topic} in {month} {year}.",
    "The {title} {per} left {org} after {num} years.",
    "{per} and {per2} published a report on {topic} for {org}.",
    "Flights from {loc} to {loc2} were cancelled on {day} {month}.",
    "{org} hired {num} new employees in {loc} last year.",
    "{per} is married to {per2} and they live near {loc}.",
    "Did {per} really sell shares of {org} in {year}?",
    "{per} (born {year}) is a {title} from {loc}.",
    "\"We are proud of our team in {loc},\" said {per} of {org}.",
]
_WEEKDAY = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
# Make sure every ASCII letter, digit and common punctuation mark is in the corpus, so that unseen
# words are split into pieces rather than mapped to [UNK].
_COVERAGE = [
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
    "Pack my box with five dozen liquor jugs; 0 1 2 3 4 5 6 7 8 9.",
    "Sphinx of black quartz, judge my vow: (yes) [no] {maybe} - 50% & $12 @ #3 / 'quoted' \"text\" ?",
]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.7 else rng.choice(_FIRST)


def generate_corpus(n_sentences: int = 800, seed: int = 0) -> list[str]:
    """Varied English sentences with people, organisations, places, dates and numbers."""
    rng = random.Random(seed)
    sentences = list(_COVERAGE)
    for _ in range(n_sentences):
        slots = dict(
            per=_person(rng), per2=_person(rng), org=rng.choice(_ORG), org2=rng.choice(_ORG),
            loc=rng.choice(_LOC), loc2=rng.choice(_LOC), month=rng.choice(_MONTH),
            day=rng.randint(1, 28), year=rng.randint(1950, 2025), title=rng.choice(_TITLE),
            topic=rng.choice(_TOPIC), weekday=rng.choice(_WEEKDAY), num=rng.randint(2, 40),
            money=rng.randint(5, 900),
        )
        sentences.append(rng.choice(_TEMPLATES).format(**slots))
    return sentences


_SPECIALS = dict(
    bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]", sep_token="[SEP]",
    pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
)


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_dir() -> Path:
    """Train the SentencePiece model once per process; return a directory holding the tokenizer."""
    out = Path(tempfile.mkdtemp(prefix="relex_tok_"))
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(generate_corpus()),
        model_writer=model_bytes,
        model_type="unigram",
        vocab_size=600,
        hard_vocab_limit=False,
        character_coverage=1.0,
        # deberta-v3's layout: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3.
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    raw = out / "raw"
    raw.mkdir()
    (raw / "spm.model").write_bytes(model_bytes.getvalue())
    config = dict(tokenizer_class="DebertaV2Tokenizer", do_lower_case=False, vocab_type="spm", **_SPECIALS)
    (raw / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # Loading the directory (not `DebertaV2Tokenizer(vocab_file=...)`, which yields only [UNK],
    # GUIDE §5) converts spm.model into a `tokenizers` Unigram; saving writes tokenizer.json.
    tokenizer = transformers.AutoTokenizer.from_pretrained(raw)
    final = out / "tokenizer"
    tokenizer.save_pretrained(final)
    shutil.copy(raw / "spm.model", final / "spm.model")
    _check_tokenizer(transformers.AutoTokenizer.from_pretrained(final))
    return final


def _check_tokenizer(tokenizer) -> None:
    ids = tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]", "[UNK]"])
    if ids != [0, 1, 2, 3]:
        raise AssertionError(f"special token ids {ids} != [0, 1, 2, 3]")
    enc = tokenizer("Quentin Walker visited Helsinki in 1987 with Microsoft engineers.")
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    if pieces[0] != "[CLS]" or pieces[-1] != "[SEP]":
        raise AssertionError(f"no [CLS] ... [SEP] around the text: {pieces}")
    body = enc["input_ids"][1:-1]
    if tokenizer.unk_token_id in body or len(set(body)) < 8:
        raise AssertionError(f"tokenizer does not split real words into known pieces: {pieces}")


def build_tokenizer_dir(path: str | Path) -> Path:
    """Write a DeBERTa-v3-style tokenizer directory to `path` and return it.

    The directory holds `tokenizer.json`, `tokenizer_config.json` and the SentencePiece `spm.model`;
    `transformers.AutoTokenizer.from_pretrained(path)` loads it as a `DebertaV2Tokenizer` with
    ids 0-3 = [PAD] [CLS] [SEP] [UNK] and [MASK] = 4. The model is trained once per process.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for file in _trained_tokenizer_dir().iterdir():
        shutil.copy(file, path / file.name)
    return path


_WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # bert-base-uncased's order


@functools.lru_cache(maxsize=None)
def _wordpiece_tokenizer_dir() -> Path:
    """An uncased BERT tokenizer directory, built once per process (see `build_wordpiece_tokenizer_dir`)."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(
        piece for text in generate_corpus()
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    chars = sorted({c for w in words for c in w})
    # tokenizers' WordPieceTrainer is not deterministic (ids change between runs); this vocabulary
    # is: every character, word-initial and continuation, then the 300 most frequent words whole
    # (other words split into several pieces, as real rare words do).
    frequent = [w for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1][:300]
    vocab = {t: i for i, t in enumerate([*_WORDPIECE_SPECIALS, *chars, *(f"##{c}" for c in chars), *frequent])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_sep = [("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=cls_sep
    )
    out = Path(tempfile.mkdtemp(prefix="relex_wordpiece_")) / "tokenizer"
    transformers.BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=True).save_pretrained(out)
    loaded = transformers.AutoTokenizer.from_pretrained(out)
    pieces = loaded.convert_ids_to_tokens(loaded("Zorbax WALKER visited Helsinki")["input_ids"])
    if pieces[:3] != ["[CLS]", "z", "##o"] or "walker" not in pieces or pieces[-1] != "[SEP]":
        raise AssertionError(f"the WordPiece tokenizer does not lowercase and split as BERT-uncased: {pieces}")
    return out


def build_wordpiece_tokenizer_dir(path: str | Path) -> Path:
    """Write an uncased BERT WordPiece tokenizer directory (`tokenizer.json`, loaded by
    `AutoTokenizer` as a `BertTokenizer`) to `path`: lowercasing `BertNormalizer`, BERT's
    pre-tokenizer, ids 0-4 = [PAD] [UNK] [CLS] [SEP] [MASK] as bert-base-uncased orders them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for file in _wordpiece_tokenizer_dir().iterdir():
        shutil.copy(file, path / file.name)
    return path


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

# deberta-v3-small's attention settings, tiny sizes.
DEFAULT_ENCODER: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=512,
    **DEBERTA_V3_ATTENTION,
    type_vocab_size=0,
    pad_token_id=0,
)
# A tiny BERT (MiniLM's layout: post-LayerNorm blocks, absolute positions, 2 token types).
DEFAULT_BERT_ENCODER: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=512,
    type_vocab_size=2,
    pad_token_id=0,
)
# Released relex setting (all pairs + pair MLP), tiny sizes.
DEFAULT_GLINER: dict[str, Any] = dict(
    relations_layer="none",
    triples_layer=None,
    span_mode="markerV0",
    hidden_size=64,
    max_width=4,
    num_rnn_layers=1,
    fuse_layers=False,
    subtoken_pooling="first",
    dropout=0.4,
)


def _init_arg_names(*classes) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        names |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    return names


_GLINER_KEYS = _init_arg_names(BaseGLiNERConfig, UniEncoderRelexConfig, GLiNERConfig)
# DebertaV2Config's declared fields plus the attributes the model reads with getattr only.
_DEBERTA_EXTRA_KEYS = {
    "position_buckets", "share_att_key", "norm_rel_ebd", "attention_head_size", "embedding_size",
    "conv_kernel_size", "conv_groups", "conv_act",
}
_ENCODER_KEYS = (
    _init_arg_names(transformers.DebertaV2Config)
    | set(transformers.DebertaV2Config().to_dict())
    | _DEBERTA_EXTRA_KEYS
) - _GLINER_KEYS
_BERT_ENCODER_KEYS = (_init_arg_names(transformers.BertConfig) | set(transformers.BertConfig().to_dict())) - _GLINER_KEYS

# backbone (model_type) -> (transformers config class, model class, default config, its config keys,
# tokenizer builder)
_BACKBONES = {
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", DEFAULT_ENCODER, _ENCODER_KEYS, build_tokenizer_dir),
    "bert": ("BertConfig", "BertModel", DEFAULT_BERT_ENCODER, _BERT_ENCODER_KEYS, build_wordpiece_tokenizer_dir),
}


def _split_overrides(overrides: dict[str, Any], encoder_keys=_ENCODER_KEYS) -> tuple[dict[str, Any], dict[str, Any]]:
    gliner_kw, encoder_kw = {}, {}
    for key, value in overrides.items():
        if key in _GLINER_KEYS:
            gliner_kw[key] = value
        elif key in encoder_keys:
            encoder_kw[key] = value
        else:  # PretrainedConfig swallows unknown kwargs silently; a typo must not.
            raise TypeError(f"unknown config override {key!r}")
    return gliner_kw, encoder_kw


def state_dicts_equal(a, b) -> list[str]:
    """Names whose tensors differ (or exist on one side only) between two state dicts."""
    bad = sorted(set(a) ^ set(b))
    for name in set(a) & set(b):
        x, y = a[name], b[name]
        if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            bad.append(name)
    return bad


# Calibration batch for the head rescaling in `build_relex_model` (fixed, so builds are reproducible).
CALIBRATION_TEXTS = [
    "Alice Smith works at Google in Paris since 2019.",
    "Bob founded Siemens in Berlin with Maria Garcia.",
    "The BBC reported that Wei Chen moved to Tokyo on Monday.",
]
CALIBRATION_LABELS = ["person", "organization", "location", "date"]
CALIBRATION_RELATIONS = ["works at", "located in", "founded by"]


def _last_linear(module):
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1]


def _scale_linear(linear, factor: float) -> None:
    with torch.no_grad():
        linear.weight.mul_(factor)
        if linear.bias is not None:
            linear.bias.mul_(factor)


# Adjacency heads scoring sigmoid(Z Z^T) with Z the output of their last Linear.
_GRAM_ADJACENCY = ("bilinear", "gcn", "gat")


def _calibrate_heads(model, logit_std: float, entity_logit_mean: float | None) -> dict[str, float]:
    """Set the last Linear of the span, entity-prompt, adjacency and pair heads (data-driven, in place).

    Re-drawn at std 0.3, every GLiNER MLP multiplies the scale by ~sqrt(fan_in) * 0.3, so entity
    logits reach |x| ~ 1e3 and every sigmoid saturates to exactly 0 or 1 (no usable threshold, tied
    decoder scores). Each head ends in a Linear, and an affine change of that Linear's weight and
    bias changes its output exactly as intended. Measured on `CALIBRATION_TEXTS`, in this order:

    1. span vectors (`span_rep_layer`): centred (no offset shared by every dot product), component 0
       made a constant `a` (a "bias feature"), then scaled so that dot products of two different
       spans of a text have RMS `logit_std` (what the `dot` adjacency head and KGE scorers see);
    2. entity logits (`prompt_rep_layer`) to std `logit_std`, then, through the prompt bias at
       component 0 (multiplied by the constant `a` in every span), to mean `entity_logit_mean`;
    3. adjacency logits of the `mlp`, `bilinear`, `gcn` and `gat` heads centred and scaled to
       `logit_std` on the spans selected at threshold 0.5 (`dot` has no parameters; `attn` gives
       softmax weights and is left as drawn);
    4. pair-MLP relation logits (`pair_rep_layer`) to std `logit_std`. KGE parameters stay as drawn.

    Returns the factors applied.
    """
    inner = model.model
    captured: dict[str, torch.Tensor] = {}
    hook = inner.span_rep_layer.register_forward_hook(lambda _m, _a, out: captured.__setitem__("span", out))

    def run(threshold: float):
        # adjacency_threshold 0 keeps every predicted pair of an adjacency head (masked ones are 0).
        return reference_forward(
            model, CALIBRATION_TEXTS, CALIBRATION_LABELS, CALIBRATION_RELATIONS, threshold, adjacency_threshold=0.0
        )

    def captured_spans(out):
        spans = captured["span"].detach().flatten(1, 2)  # (B, S, D)
        return spans, torch.from_numpy(out["span_mask"])

    try:
        # 1. Threshold 0 selects (nearly) every span: attn/gat adjacency heads crash when none is kept.
        spans, valid = captured_spans(run(0.0))
        span_last = _last_linear(inner.span_rep_layer)
        with torch.no_grad():
            mean = spans[valid].mean(0)
            span_last.bias.sub_(mean)
            span_last.weight[0].zero_()
            span_last.bias[0] = 0.0
        spans = spans - mean
        spans[..., 0] = 0.0
        dots = []
        for row, keep in zip(spans, valid):
            x = row[keep]
            dots.append((x @ x.T)[~torch.eye(len(x), dtype=torch.bool)])
        rms = float(torch.cat(dots).pow(2).mean().sqrt())
        factors = {"span_rep_layer": (logit_std / rms) ** 0.5}
        _scale_linear(span_last, factors["span_rep_layer"])
        bias_feature = float(spans[valid][:, 1:].std()) * factors["span_rep_layer"]
        with torch.no_grad():
            span_last.bias[0] = bias_feature

        # 2.
        out = run(0.0)
        spans, _ = captured_spans(out)
        if not torch.allclose(spans[..., 0], torch.tensor(bias_feature), rtol=1e-4):
            mode = model.config.span_mode
            raise AssertionError(f"span_mode {mode!r}: span vectors are not affine in the last Linear")
        valid = out["span_mask"].reshape(out["logits"].shape[:3])
        factors["prompt_rep_layer"] = logit_std / float(out["logits"][valid].std())
        prompt_last = _last_linear(inner.prompt_rep_layer)
        _scale_linear(prompt_last, factors["prompt_rep_layer"])
        if entity_logit_mean is not None:
            current = float(out["logits"][valid].mean()) * factors["prompt_rep_layer"]
            with torch.no_grad():
                prompt_last.bias[0] += (entity_logit_mean - current) / bias_feature

        def run_selected():
            """Forward at threshold 0.5 (a realistic entity set), or 0 if that keeps < 2 entities."""
            try:
                out = run(0.5)
                if (out["entity_mask"].sum(1) >= 2).any():
                    return out
            except (RuntimeError, IndexError):  # attn / gat heads fail when no span is kept
                pass
            return run(0.0)

        # 3.
        mode = str(model.config.relations_layer).lower()
        if mode in _GRAM_ADJACENCY or mode == "mlp":
            # Adjacency logits are Z Z^T (Z = the last Linear's output) or that Linear's output.
            adj_last = _last_linear(inner.relations_rep_layer)
            hook_adj = adj_last.register_forward_hook(lambda _m, _a, out: captured.__setitem__("adj", out))
            try:
                out = run_selected()
            finally:
                hook_adj.remove()
            z, mask = captured["adj"].detach(), torch.from_numpy(out["entity_mask"]).bool()
            pair_valid = (mask[:, :, None] & mask[:, None, :]) & ~torch.eye(mask.shape[1], dtype=torch.bool)
            with torch.no_grad():  # centre, so that about half the pairs pass adjacency threshold 0.5
                if mode == "mlp":
                    z = z.squeeze(-1)[pair_valid]
                    adj_last.bias.sub_(z.mean())
                    factors["relations_rep_layer"] = logit_std / float(z.std())
                else:
                    z_mean = z[mask].mean(0)
                    adj_last.bias.sub_(z_mean)
                    z = z - z_mean
                    rms = float((z @ z.transpose(1, 2))[pair_valid].pow(2).mean().sqrt())
                    factors["relations_rep_layer"] = (logit_std / rms) ** 0.5
            _scale_linear(adj_last, factors["relations_rep_layer"])

        # 4.
        if hasattr(inner, "pair_rep_layer"):
            out = run_selected()
            rel = out["rel_logits"][out["rel_mask"]]
            if rel.size < 2:
                raise AssertionError("no entity pairs in the calibration batch")
            factors["pair_rep_layer"] = logit_std / float(rel.std())
            _scale_linear(_last_linear(inner.pair_rep_layer), factors["pair_rep_layer"])
    finally:
        hook.remove()
    return factors


def build_relex_model(
    path: str | Path,
    seed: int = 0,
    std: float = 0.3,
    encoder: dict[str, Any] | None = None,
    logit_std: float | None = 3.0,
    entity_logit_mean: float | None = -4.5,
    backbone: str = "deberta-v2",
    **config_overrides,
):
    """Build, re-draw, save and strictly reload a tiny random GLiNER span-relex model.

    Args:
        path: output directory of the gliner checkpoint (`gliner_config.json`, `model.safetensors`,
            tokenizer files). The backbone is written to the sibling directory `<path>_backbone`.
        seed: seeds torch's init and the re-draw.
        std: scale of the re-drawn weight matrices (`torch_fixtures.redraw_weights`: matrices
            ~ N(0, std), biases ~ N(0, 0.1), LayerNorm scales ~ 1 + N(0, 0.2)).
        encoder: backbone config overrides (e.g. `{"hidden_size": 48, "num_attention_heads": 4}`
            for a backbone width H != 64); defaults in `DEFAULT_ENCODER` / `DEFAULT_BERT_ENCODER`.
        logit_std: after the re-draw, set the last Linear of the span / prompt / adjacency / pair
            heads so that span-vector dot products, entity logits, adjacency logits and relation
            logits have scale `logit_std` on `CALIBRATION_TEXTS` (see `_calibrate_heads`); None
            keeps the raw re-draw, whose entity logits are ~1e3 and whose sigmoids are all exactly
            0 or 1.
        entity_logit_mean: mean entity logit on the calibration texts (with `logit_std`); the
            default -4.5 makes threshold 0.5 select roughly 10-30% of the spans, as in a trained
            model where most spans are not entities. None leaves the mean near 0 (most spans kept).
        backbone: "deberta-v2" (a DeBERTa-v3-like `DebertaV2Model` with the SentencePiece tokenizer
            of `build_tokenizer_dir`) or "bert" (a `BertModel`, with its pooler as transformers
            builds it, and the uncased WordPiece tokenizer of `build_wordpiece_tokenizer_dir`).
        **config_overrides: gliner config fields (`relations_layer`, `triples_layer`, `hidden_size`
            = D, `max_width`, `num_rnn_layers`, `fuse_layers`, `subtoken_pooling`, `embed_ent_token`,
            ...; defaults in `DEFAULT_GLINER`). Keys that are only backbone config fields
            (e.g. `position_buckets`) go to the backbone. Unknown keys raise TypeError.

    Returns:
        (model, path): the eval-mode `UniEncoderSpanRelexGLiNER` loaded from `path`.
    """
    path = Path(path)
    config_name, model_name, default_encoder, encoder_keys, build_tokenizer = _BACKBONES[backbone]
    gliner_kw, encoder_kw = _split_overrides(config_overrides, encoder_keys)
    encoder_kw = {**default_encoder, **(encoder or {}), **encoder_kw}
    gliner_kw = {**DEFAULT_GLINER, **gliner_kw}
    if gliner_kw.get("relations_layer") is None:
        raise ValueError("relations_layer=None builds a plain NER model; use 'none' for all pairs")

    backbone_dir = path.parent / f"{path.name}_backbone"
    build_tokenizer(backbone_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(backbone_dir)
    torch.manual_seed(seed)
    encoder_config = getattr(transformers, config_name)(vocab_size=len(tokenizer), **encoder_kw)
    getattr(transformers, model_name)(encoder_config).save_pretrained(backbone_dir)

    config = GLiNERConfig(model_name=str(backbone_dir), **gliner_kw)
    torch.manual_seed(seed)
    built = GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
    redraw_weights(built.model, seed, std)
    built.eval()
    if logit_std is not None:
        _calibrate_heads(built, logit_std, entity_logit_mean)
    built.save_pretrained(path, safe_serialization=True)

    model = GLiNER.from_pretrained(str(path), local_files_only=True, strict=True)
    model.eval()
    bad = state_dicts_equal(built.model.state_dict(), model.model.state_dict())
    if bad:
        raise AssertionError(f"reloaded checkpoint differs from the built model at {bad[:10]}")
    if type(model).__name__ != "UniEncoderSpanRelexGLiNER":
        raise AssertionError(f"reloaded as {type(model).__name__}, not UniEncoderSpanRelexGLiNER")
    return model, path


# --------------------------------------------------------------------------------------------------
# Reference forward
# --------------------------------------------------------------------------------------------------

_INPUT_KEYS = ("input_ids", "attention_mask", "words_mask", "text_lengths", "span_idx", "span_mask")
_OUTPUT_KEYS = (
    "logits", "prompts_embedding", "prompts_embedding_mask", "words_embedding", "mask",
    "entity_spans", "rel_idx", "rel_logits", "rel_mask", "rel_prompts_embedding",
    "rel_prompts_embedding_mask",
)


def _np(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def reference_forward(
    model,
    texts: list[str],
    labels: list[str] | list[list[str]],
    relations: list[str] | list[list[str]],
    threshold: float = 0.5,
    adjacency_threshold: float | None = None,
) -> dict[str, np.ndarray]:
    """Run gliner's own batch preparation and nn forward (eval, no grad) on one batch.

    Uses the reference's lower-level pipeline, as `inference` does for one chunk:
    `model.prepare_batch(texts, labels, relations=relations)` -> `model.collate_batch(...)`
    (collator from `model.create_collator()`) -> `model.run_batch(batch, threshold,
    adjacency_threshold)`, which calls `model.model(**batch, threshold=..., adjacency_threshold=...)`.
    `labels` / `relations` are shared lists or per-text lists of lists. Texts must be non-empty
    (gliner drops empty ones before batching).

    Returns numpy arrays (B rows, in `texts` order):

    Model inputs (the collated batch):
      input_ids            (B, T) int64
      attention_mask       (B, T) int64
      words_mask           (B, T) int64, 0 or the 1-based word index
      text_lengths         (B, 1) int64, words per text
      span_idx             (B, S, 2) int64, S = W*K, inclusive (start, end) word indices
      span_mask            (B, S) bool, True for in-text spans
      word_lengths         (B,) int64, also given to forward (packs the BiLSTM)
      token_lengths        (B,) int64, also given to forward (unused by the span model)
    Raw outputs (`GLiNERRelexOutput` fields):
      logits               (B, W, K, C) float32 entity logits
      prompts_embedding    (B, C, D) entity prompts after prompt_rep_layer
      prompts_embedding_mask (B, C) int64
      words_embedding      (B, W, D) word vectors after the BiLSTM
      mask                 (B, W) bool word mask
      entity_spans         (B, E, 2) int64 (start, end) of the spans selected for relations,
                           left-packed in flattened-span order, (0, 0) padding
      rel_idx              (B, N, 2) int64 (head, tail) indices into the E selected spans, -1 padding
      rel_logits           (B, N, R) float32 relation logits (padded rows score the pair (0, 0))
      rel_mask             (B, N) bool
      rel_prompts_embedding (B, R, D) raw <<REL>> token vectors
      rel_prompts_embedding_mask (B, R) int64
    Derived / captured:
      entity_mask          (B, E) int64 mask of selected spans (from the packing in forward)
      entity_reps          (B, E, D) float32 span representations of the selected spans (0 padding)
      pred_adj_matrix      (B, E, E) float32 adjacency probabilities from relations_rep_layer;
                           present only when `relations_layer` is an adjacency head (not "none")
      threshold, adjacency_threshold  () float64, the thresholds used (adjacency defaults to threshold)
    E is the largest per-row count of selected spans and may be 0. N = max_b n_b (n_b - 1) for
    relations_layer "none", but at least 1: with no pair anywhere gliner returns rel_idx = -1,
    rel_mask False and rel_logits scored on zero head/tail vectors, shape (B, 1, R). R may be 0.
    """
    model.eval()
    if adjacency_threshold is None:
        adjacency_threshold = threshold
    prepared = model.prepare_batch(texts, labels, relations=relations)
    if len(prepared["input_x"]) != len(texts):
        raise ValueError("empty texts are dropped by gliner; pass non-empty texts only")
    batch = model.collate_batch(
        prepared["input_x"],
        prepared["entity_types"],
        model.create_collator(),
        relation_types=prepared["relation_types"],
        label_names=prepared.get("label_names"),
    )

    captured: dict[str, torch.Tensor] = {}
    hooks = []
    inner = model.model
    if hasattr(inner, "relations_rep_layer"):
        hooks.append(inner.relations_rep_layer.register_forward_hook(
            lambda _m, _a, out: captured.__setitem__("pred_adj_matrix", out)))
    original_select = inner.select_target_embedding

    def select_and_capture(representations=None, rep_mask=None):
        rep, mask = original_select(representations=representations, rep_mask=rep_mask)
        if "entity_mask" not in captured:  # first call packs span_rep; second packs span_idx
            captured["entity_mask"], captured["entity_reps"] = mask, rep
        return rep, mask

    inner.select_target_embedding = select_and_capture
    try:
        with torch.no_grad():
            output = model.run_batch(batch, threshold=threshold, adjacency_threshold=adjacency_threshold)
    finally:
        del inner.select_target_embedding
        for hook in hooks:
            hook.remove()

    result: dict[str, np.ndarray] = {key: _np(batch[key]) for key in _INPUT_KEYS}
    for key in ("word_lengths", "token_lengths"):
        if key in batch:
            result[key] = np.asarray(_np(batch[key]), dtype=np.int64).reshape(-1)
    for key in _OUTPUT_KEYS:
        value = getattr(output, key, None)
        if value is not None:
            result[key] = _np(value)
    for key, value in captured.items():
        result[key] = _np(value)
    result["threshold"] = np.float64(threshold)
    result["adjacency_threshold"] = np.float64(adjacency_threshold)
    return result
