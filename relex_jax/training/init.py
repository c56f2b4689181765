"""Where a training run's model comes from: a relex / gliner checkpoint, a pretrained backbone, or
nothing (random weights and a tokenizer trained on the training texts).

All three return an `InitialModel`: the `RelexConfig`, float32 variables, a `tokenizers.Tokenizer`
holding the prompt tokens, and a directory of tokenizer files to ship with the trained model.

New prompt tokens are set up as gliner's `_resize_token_embeddings` does (spec §14): the entity,
separator and relation tokens are appended to the tokenizer as special tokens, `class_token_index`
= len - 3 and `rel_token_index` = len - 1, and the embedding table is resized to the new length.
gliner's resize (HF `mean_resizing`) draws new rows from a Gaussian with the old rows' mean and
1e-9 x their covariance; we set them to the mean (the draw differs from it by ~1e-5 of the
embedding scale).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import flax.linen as nn
import jax
import numpy as np

from relex_jax.config import RelexConfig
from relex_jax.modeling.encoders import ENCODERS, model_type
from relex_jax.modeling.relex import RelexModule, example_inputs

log = logging.getLogger(__name__)

INIT_MODES = ("scratch", "backbone", "checkpoint")
# DeBERTa-v3's special-token layout, which the trained tokenizer copies.
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class ModelInit:
    """How to build the starting model (the `model:` section of a training config).

    - `init: checkpoint`, `path`: a relex-jax model directory or a gliner checkpoint (directory or
      hub id). `gliner` overrides are not allowed: the checkpoint fixes the architecture.
    - `init: backbone`, `path`: a transformers DeBERTa-v2/v3 or BERT-family directory (or hub id)
      with `tokenizer.json`; the GLiNER heads are initialised randomly. `gliner` sets the head fields.
    - `init: scratch`: `encoder` (the encoder config fields; `model_type` picks the family,
      "deberta-v2" by default, or "bert") and `gliner` fields, all weights random;
      `tokenizer` is a directory with `tokenizer.json`, or None to train a byte-pair tokenizer of
      `vocab_size` pieces on the training texts.
    """

    init: str = "scratch"
    path: str | None = None
    encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    gliner: dict[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer: str | None = None
    vocab_size: int = 2000

    def __post_init__(self):
        if self.init not in INIT_MODES:
            raise ValueError(f"model.init must be one of {INIT_MODES}, got {self.init!r}")
        if self.init != "scratch" and not self.path:
            raise ValueError(f"model.init={self.init!r} needs model.path")
        if self.init == "checkpoint" and (self.gliner or self.encoder):
            raise ValueError("model.init='checkpoint' takes its architecture from the checkpoint: drop model.gliner/encoder")
        if self.init == "backbone" and self.encoder:
            raise ValueError("model.init='backbone' reads the encoder config from the backbone: drop model.encoder")


@dataclasses.dataclass
class InitialModel:
    config: RelexConfig
    variables: dict[str, Any]
    tokenizer: Any  # tokenizers.Tokenizer, no padding / truncation
    tokenizer_dir: Path  # tokenizer files to copy into saved model directories


def train_tokenizer(texts: Iterable[Iterable[str]], vocab_size: int):
    """A byte-pair tokenizer trained on pre-split texts (lists of words), in DeBERTa-v3's layout:
    ids 0-4 = [PAD] [CLS] [SEP] [UNK] [MASK], a "▁" word-start marker (SentencePiece's Metaspace),
    "[CLS] text [SEP]" framing. BPE rather than Unigram because `tokenizers`' Unigram trainer is not
    deterministic (piece scores and ids change from run to run); its BPE trainer is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator((" ".join(words) for words in texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return tokenizer


def save_tokenizer(tokenizer, out: Path) -> Path:
    """Write `tokenizer.json` plus a `tokenizer_config.json` that transformers (and so gliner) loads."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    names = dict(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]",
                 bos_token="[CLS]", eos_token="[SEP]")
    config = dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=1_000_000, **names)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def _add_prompt_tokens(tokenizer, gliner_fields: dict[str, Any]) -> tuple[int, int, int]:
    """Append the entity / separator / relation tokens; (class_token_index, rel_token_index, size).
    A tokenizer that already ends with them (saved by an earlier start of the same run) is kept."""
    from tokenizers import AddedToken

    names = [gliner_fields.get(k, d) for k, d in (("ent_token", "<<ENT>>"), ("sep_token", "<<SEP>>"), ("rel_token", "<<REL>>"))]
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = [tokenizer.token_to_id(n) for n in names]
    if ids == [size - 3, size - 2, size - 1]:
        return size - 3, size - 1, size
    present = [n for n, i in zip(names, ids) if i is not None]
    if present:
        raise ValueError(f"the tokenizer already has {present}: start from a relex/gliner checkpoint (model.init=checkpoint)")
    tokenizer.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    return size - 3, size - 1, size


def _random_variables(config: RelexConfig, rng, shapes_only: bool = False) -> dict[str, Any]:
    """Fresh parameters, or with `shapes_only` their shapes and dtypes (no draws, no compilation)."""
    init = functools.partial(RelexModule(config).init, rng, *example_inputs(config))
    if shapes_only:
        return nn.meta.unbox(dict(jax.eval_shape(init)))
    return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(dict(init())))


def _resized_embeddings(table: np.ndarray, rows: int) -> np.ndarray:
    """Cut the table to `rows`, or append rows equal to the mean of the existing ones."""
    table = np.asarray(table, np.float32)
    if rows <= len(table):
        return table[:rows].copy()
    extra = np.broadcast_to(table.mean(axis=0, keepdims=True), (rows - len(table), table.shape[1]))
    return np.concatenate([table, extra])


def _scratch_encoder(fields: dict[str, Any], vocab_size: int):
    """The `model.encoder` section as an encoder config of its `model_type`'s family. Unlike a
    `config.json`, it is written by hand: unknown fields are errors, not ignored."""
    try:
        return ENCODERS[model_type(fields)].config_cls(**{k: v for k, v in fields.items() if k != "model_type"}, vocab_size=vocab_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.encoder: {err}") from None


def _relex_config(encoder, gliner_fields: dict[str, Any], class_index: int, rel_index: int) -> RelexConfig:
    names = {f.name for f in dataclasses.fields(RelexConfig)} - {"encoder", "extra"}
    known = {k: v for k, v in gliner_fields.items() if k in names}
    extra = {k: v for k, v in gliner_fields.items() if k not in names}
    for reserved in ("class_token_index", "rel_token_index", "vocab_size"):
        if reserved in known:
            raise ValueError(f"model.gliner.{reserved} is set by the tokenizer; remove it")
    return RelexConfig(encoder=encoder, class_token_index=class_index, rel_token_index=rel_index,
                       vocab_size=encoder.vocab_size, extra=extra, **known)


def initial_model(spec: ModelInit, rng, workdir: Path, training_texts: Iterable[Iterable[str]] = (),
                  shapes_only: bool = False) -> InitialModel:
    """Build the starting model; tokenizer files go to `workdir/tokenizer/` unless a checkpoint has them.
    When `workdir/tokenizer/` already exists (a resumed run), that tokenizer is used as it is.
    `shapes_only` (a resumed run: the checkpoint holds the values) leaves the random parameters as
    `jax.ShapeDtypeStruct`s: eager initialisation compiles every op and takes seconds even for a tiny model."""
    from tokenizers import Tokenizer

    from relex_jax.inference import RelexModel

    if spec.init == "checkpoint":
        model = RelexModel.from_pretrained(spec.path, devices=jax.local_devices()[:1])
        if model.tokenizer is None:
            raise ValueError(f"{spec.path} has no tokenizer.json; training needs one")
        variables = jax.tree_util.tree_map(np.asarray, model.variables)
        return InitialModel(model.config, variables, model.tokenizer, model.model_dir)

    if spec.init == "backbone":
        from relex_jax.checkpoint.files import resolve_model_dir
        from relex_jax.checkpoint.hf_encoder import load_hf_encoder

        source = resolve_model_dir(spec.path, "config.json", ("tokenizer*", "spm.model", "special_tokens_map.json"))
        if not (source / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{source} has no tokenizer.json (a fast tokenizer is needed)")
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        module, backbone = load_hf_encoder(source)
        encoder_config = module.config
    else:
        saved = Path(workdir) / "tokenizer"
        if (saved / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(saved / "tokenizer.json"))
            log.info("using the tokenizer saved in %s by an earlier start of this run", saved)
        elif spec.tokenizer:
            tokenizer = Tokenizer.from_file(str(Path(spec.tokenizer) / "tokenizer.json"))
        else:
            if jax.process_count() > 1:
                raise ValueError(
                    "model.init='scratch' trains its tokenizer on the training data, and each host holds only its "
                    "share of it: set model.tokenizer to a directory with tokenizer.json (e.g. DIR/tokenizer of a "
                    "single-process run) so that every host uses the same one"
                )
            texts = list(training_texts)
            if not texts:
                raise ValueError("model.init='scratch' without model.tokenizer trains one on the training texts; none given")
            tokenizer = train_tokenizer(texts, spec.vocab_size)
            log.info("trained a %d-piece byte-pair tokenizer on %d texts", tokenizer.get_vocab_size(), len(texts))
        backbone = None
        encoder_config = None

    tokenizer.no_padding()
    tokenizer.no_truncation()
    class_index, rel_index, size = _add_prompt_tokens(tokenizer, spec.gliner)
    if encoder_config is None:
        encoder_config = _scratch_encoder({k: v for k, v in spec.encoder.items() if k != "vocab_size"}, size)
    else:
        encoder_config = dataclasses.replace(encoder_config, vocab_size=size)
    config = _relex_config(encoder_config, spec.gliner, class_index, rel_index)
    variables = _random_variables(config, rng, shapes_only)
    if backbone is not None:
        backbone = jax.tree_util.tree_map(np.asarray, backbone)
        embeddings = backbone["embeddings"]["word_embeddings"]
        embeddings["embedding"] = _resized_embeddings(embeddings["embedding"], size)
        expected = jax.tree_util.tree_structure(variables["params"]["backbone"])
        if jax.tree_util.tree_structure(backbone) != expected:
            raise ValueError("the backbone's parameters do not match the encoder the relex model builds")
        variables["params"]["backbone"] = backbone
    tokenizer_dir = Path(workdir) / "tokenizer"
    if jax.process_index() == 0:
        save_tokenizer(tokenizer, tokenizer_dir)
    return InitialModel(config, variables, tokenizer, tokenizer_dir)
