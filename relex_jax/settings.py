"""`InferenceSettings`: how `RelexModel` reads, runs and decodes texts, in one frozen object.

Every value is checked when the object is built, so `predict` and `evaluate` refuse a bad option
before a model loads; `check_model` then checks the settings against the loaded model (window
overlap, packing) before the first batch, so nothing fails hours into a corpus.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

LONG_TEXT_MODES = ("window", "truncate")
# Default packed row length: several texts per row (~65 tokens each with the prompt for real
# tokenizers), so the last text of a row wastes little; attention cost grows with the row, the
# rest of the encoder only with real tokens.
PACKED_ROW_TOKENS = 512


def check_probability(name: str, value) -> None:
    """A threshold must be a real number in [0, 1], numpy scalars included (None: not set)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def check_positive(name: str, value, optional: bool = False) -> None:
    """A size must be a positive integer (None allowed when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The options of `RelexModel.inference` (see its docstring) other than the texts, labels and
    spans: thresholds, overlap rules, batching, long-text handling, packing and extra outputs."""

    threshold: float = 0.5
    adjacency_threshold: float | None = None  # default: threshold
    relation_threshold: float | None = None  # default: threshold
    flat_ner: bool = True
    multi_label: bool = False
    batch_size: int = 8
    long_texts: str = "window"
    window_size: int | None = None  # default: the model's max_len
    window_stride: int | None = None  # default: 3/4 of a window, less if a span of max_width words needs it
    packing: bool | int = False  # True: rows of PACKED_ROW_TOKENS tokens; an int: that row length
    return_class_probs: bool = False
    return_vectors: bool = False  # gliner's span and pair representations with the results
    return_label_vectors: bool = False  # gliner's label vectors with the results
    relate_input_spans: bool = False  # relations between exactly the input spans (the given-entities setting)

    def __post_init__(self):
        for name in ("threshold", "adjacency_threshold", "relation_threshold"):
            check_probability(name, getattr(self, name))
        if self.threshold is None:
            raise ValueError("threshold must be a probability in [0, 1], got None")
        check_positive("batch_size", self.batch_size)
        if self.long_texts not in LONG_TEXT_MODES:
            raise ValueError(f"long_texts must be one of {LONG_TEXT_MODES}, got {self.long_texts!r}")
        check_positive("window_size", self.window_size, optional=True)
        check_positive("window_stride", self.window_stride, optional=True)
        if not (self.packing is True or self.packing is False or (type(self.packing) is int and self.packing > 0)):
            raise ValueError(f"packing must be True, False or a positive row length in tokens, got {self.packing!r}")

    @property
    def relation_cutoff(self) -> float:
        """The relation threshold in force (gliner: the entity threshold unless set)."""
        return self.threshold if self.relation_threshold is None else self.relation_threshold

    def row_tokens(self) -> int | None:
        """Tokens per packed row, None without packing."""
        if self.packing is False:
            return None
        return PACKED_ROW_TOKENS if self.packing is True else self.packing

    def windows(self, config) -> tuple[int, int]:
        """(words per window, words between window starts) for a model's `RelexConfig`."""
        size = self.window_size or config.max_len
        stride = self.window_stride or max(1, min(size - size // 4, size - config.max_width + 1))
        return size, stride

    def check_model(self, config) -> None:
        """Refuse settings this model cannot run, before any text is read: windows that overlap
        too little for a span of `max_width` words to lie whole in one, packing on an encoder
        that reads across texts."""
        from relex_jax.data.packing import check_packable

        size, stride = self.windows(config)
        if self.long_texts == "window" and size - stride < config.max_width - 1:
            raise ValueError(
                f"windows of {size} words {stride} apart overlap by {size - stride} words, fewer than the "
                f"{config.max_width - 1} a span of up to max_width={config.max_width} words needs "
                "to lie whole in some window; lower window_stride (or raise window_size)"
            )
        if self.packing is not False:
            check_packable(config)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for reports (thresholds as floats)."""
        out = dataclasses.asdict(self)
        for name in ("threshold", "adjacency_threshold", "relation_threshold"):
            if out[name] is not None:
                out[name] = float(out[name])
        return out
