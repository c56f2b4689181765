"""Packed training batches (`data.packing`): every step fills one fixed token grid.

gliner batches a fixed number of texts and pads them to the longest; under `jit` every new
padded shape is a compilation. Here each step takes texts from the data stream, in order, for as
long as they fit a fixed grid of `rows x tokens_per_row` tokens (first fit, never cut: see
`relex_jax.data.packing`) and at most `max_texts` of them, so the encoder always sees one shape
and almost no padding. What changes for the optimisation: the number of texts per step varies
around `data.batch_size` (the grid holds about that many texts of mean length), and the loss is
gliner's (a sum over the step's texts with the default `loss.reduction: sum`), so a step's
weight follows its text count. Per-text arrays (words, spans, gold entities, labels) have fixed
sizes too: a step takes the first of a few shape classes, (words, gold entities) =
(`word_sizes[k]`, `gold_entities[k]`), that holds its longest text and its most entities, so a run
compiles its step at most `len(word_sizes)` times. The gold-entity size follows the word size
because the relation stage scores E x E pairs per text: one size for all steps, the most entities
any text has (24 in CoNLL04), would score ~5x the pairs most steps need. The span stage runs on
the step's words end to end (`max_words` of them, see `relex_jax.data.packing.word_list`), so a
step also holds at most that many words.

The plan (grid, text slots, word sizes) is computed once from the training data and stored in
the checkpoint's data position: resuming with other data or settings is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from typing import Any, Mapping, Sequence

import numpy as np

from relex_jax.data.packing import PackedBatch, first_fit, pack_batch

log = logging.getLogger(__name__)

PACKING_KEYS = ("tokens_per_row", "rows", "max_texts", "max_words", "word_sizes")
DEFAULT_ROW_TOKENS = 256
DEFAULT_WORD_SIZES = 3
ROW_MULTIPLE = 32  # rows are rounded up to a multiple of this many tokens
SAMPLE_BATCHES = 16  # gliner-shaped batches collated to measure the mean text length
LOOKAHEAD = 4  # texts beyond a step's first misfit tried to fill the grid


@dataclasses.dataclass(frozen=True)
class PackingPlan:
    tokens_per_row: int  # T
    rows: int  # grid rows per step (all hosts' devices' share of them on this host)
    max_texts: int  # N text slots per step
    max_words: int  # F: the step's words end to end, which the span stage runs on
    word_sizes: tuple[int, ...]  # the padded word counts a step may have, increasing
    gold_entities: tuple[int, ...]  # E of each word size's class (non-decreasing; the last: the most any text has)
    start_texts: int  # where the per-step search for the text count starts (deterministic)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def check_packing_settings(settings: Mapping[str, Any]) -> None:
    """Validate `data.packing` (an empty mapping means all defaults)."""
    for key, value in settings.items():
        if key not in PACKING_KEYS:
            raise ValueError(f"data.packing.{key} is not a packing setting; known: {', '.join(PACKING_KEYS)}")
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"data.packing.{key} must be a positive integer or null, got {value!r}")


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def _token_bound(examples: Sequence[Any], tokenizer, collate_config, label_sizes: Mapping[str, int]) -> np.ndarray:
    """An upper bound on each text's tokens with any prompt collation can give it: its words
    (cut at `max_len`, with special tokens) plus the longest labels of each kind."""
    cfg = collate_config
    words = [list(ex.tokens[: cfg.max_len]) for ex in examples]
    text_tokens = np.array([len(e.ids) for e in tokenizer.encode_batch(words, is_pretokenized=True)])
    labels = {"entities": set(), "relations": set()}
    for ex in examples:
        labels["entities"].update(e[-1] for e in ex.entities)
        labels["entities"].update(ex.ner_labels or ())
        labels["entities"].update(ex.ner_negatives or ())
        labels["relations"].update(r[-1] for r in ex.relations)
        labels["relations"].update(ex.rel_labels or ())
        labels["relations"].update(ex.rel_negatives or ())
    labels["entities"].add(cfg.other_label)
    prompt = 2  # the two <<SEP>>
    for kind, names in labels.items():
        if not names:
            continue
        lengths = sorted((len(e.ids) for e in tokenizer.encode_batch([[n] for n in names], is_pretokenized=True,
                                                                    add_special_tokens=False)), reverse=True)
        prompt += sum(1 + n for n in lengths[: label_sizes[kind]])
    return text_tokens + prompt


def _word_sizes(step_words: np.ndarray, count: int) -> tuple[int, ...]:
    """`count` padded word sizes (the largest = the longest text) minimising the padded words
    over steps whose longest text has `step_words` words."""
    values = np.unique(step_words)
    if len(values) <= count:
        return tuple(int(v) for v in values)
    best, best_cost = None, None
    top = int(values[-1])
    candidates = np.unique(np.quantile(values[:-1], np.linspace(0, 1, 64), method="higher"))  # bounded search
    for combo in itertools.combinations(range(len(candidates)), count - 1):
        sizes = np.append(candidates[list(combo)], top)
        cost = sizes[np.searchsorted(sizes, step_words)].sum()
        if best_cost is None or cost < best_cost:
            best, best_cost = sizes, cost
    return tuple(int(v) for v in best)


def _mean_tokens(examples: Sequence[Any], tokenizer, collate_config, buckets, batch_size: int, seed: int) -> float:
    """Mean tokens per text (prompt included) of gliner-shaped batches: collates up to
    `SAMPLE_BATCHES` batches of the first texts, with seeded draws (the plan is reproducible)."""
    from relex_jax.data.collate import collate

    lengths = []
    for b in range(min(SAMPLE_BATCHES, max(1, len(examples) // batch_size))):
        batch = collate(examples[b * batch_size: (b + 1) * batch_size], tokenizer, collate_config,
                        random.Random(f"{seed}/packing-plan/{b}"), buckets={**buckets, "tokens": []})
        lengths.extend(batch.inputs.attention_mask.sum(1))
    return float(np.mean(lengths))


def plan_packing(examples: Sequence[Any], tokenizer, collate_config, batch_size: int, buckets: Mapping[str, Any],
                 settings: Mapping[str, Any], seed: int, rows_multiple: int = 1) -> PackingPlan:
    """The grid and per-text sizes for `examples` (label sizes from `buckets`).

    Defaults: about `batch_size` texts of the mean length seen in sample batches per step (so a
    step holds about a gliner batch), in rows of about 256 tokens, each at least as long as the
    longest text can be; 1.5x as many text slots; 1.25x the words the grid's tokens hold at the
    data's mean words per token (at least the longest text's); `DEFAULT_WORD_SIZES` word sizes
    fitted to groups of `batch_size` texts.
    """
    check_packing_settings(settings)
    bounds = _token_bound(examples, tokenizer, collate_config,
                          {kind: buckets[kind][0] for kind in ("entities", "relations")})
    longest = int(bounds.max())
    row_tokens = settings.get("tokens_per_row") or max(DEFAULT_ROW_TOKENS, _round_up(longest, ROW_MULTIPLE))
    if longest > row_tokens:
        i = int(bounds.argmax())
        raise ValueError(f"data.packing.tokens_per_row={row_tokens} is shorter than training text {i} "
                         f"({examples[i].source or 'no source'}), which can take {longest} tokens with its "
                         "prompt; raise it (texts are never cut)")
    mean = _mean_tokens(examples, tokenizer, collate_config, buckets, batch_size, seed)
    rows = _round_up(settings.get("rows") or max(1, round(batch_size * mean / row_tokens)), rows_multiple)
    if not settings.get("tokens_per_row"):  # rows just long enough for a gliner batch of mean-length texts
        row_tokens = max(_round_up(longest, ROW_MULTIPLE), _round_up(batch_size * mean / rows, ROW_MULTIPLE))
    expected = rows * row_tokens / mean  # texts per step
    max_texts = _round_up(settings.get("max_texts") or int(np.ceil(1.5 * expected)), rows_multiple)
    words = np.minimum([len(ex.tokens) for ex in examples], collate_config.max_len)
    max_words = settings.get("max_words") or _round_up(
        max(1.25 * rows * row_tokens * words.mean() / mean, words.max()), ROW_MULTIPLE)
    max_words = _round_up(max_words, rows_multiple)
    if max_words < words.max():
        raise ValueError(f"data.packing.max_words={max_words} is fewer than the longest training text's "
                         f"{words.max()} words (texts are never cut)")
    gold = np.maximum([len(ex.entities) for ex in examples], 1)
    groups = len(words) // batch_size
    step_words, step_gold = ((x[: groups * batch_size].reshape(groups, batch_size).max(1) if groups else x)
                             for x in (words, gold))
    sizes = tuple(sorted(set(_word_sizes(np.append(step_words, words.max()),
                                         settings.get("word_sizes") or DEFAULT_WORD_SIZES))))
    # each class's E: the most of the sample steps whose longest text it holds; the last class any text's
    step_class = np.searchsorted(sizes, step_words)
    golds = [int(step_gold[step_class == k].max(initial=1)) for k in range(len(sizes) - 1)] + [int(gold.max())]
    golds = tuple(int(g) for g in np.maximum.accumulate(golds))
    start = min(max_texts, max(1, int(expected)))
    return PackingPlan(int(row_tokens), int(rows), int(max_texts), int(max_words), sizes, golds, start)


class PackedStream:
    """This host's packed steps, a pure function of (seed, host, step, stream position).

    Texts come in the order of seeded per-epoch permutations (as `BatchStream`), one epoch after
    the other without gaps. A step takes the longest run of the next texts that fits its grid,
    then tries the following `LOOKAHEAD` texts one by one to fill what is left; a text tried and
    not taken waits at the front of the next step. No text is cut, skipped or repeated.
    """

    def __init__(self, examples: Sequence[Any], plan: PackingPlan, tokenizer, collate_config, buckets, seed: int,
                 host: int = 0, max_positions: int | None = None):
        self.examples, self.plan, self.tokenizer = examples, plan, tokenizer
        self.max_positions = max_positions  # absolute position table of the encoder, if it has one
        self.collate_config, self.seed, self.host = collate_config, seed, host
        self.buckets = {**buckets, "tokens": [], "words": list(plan.word_sizes),
                        "gold_entities": sorted(set(plan.gold_entities))}
        self.next = 0  # the first stream position no step has looked at
        self.pending: list[int] = []  # positions looked at and not taken yet, in stream order
        self._orders: dict[int, np.ndarray] = {}

    def position(self, step: int) -> dict[str, Any]:
        return {"batches": step, "next": self.next, "pending": list(self.pending), "examples": len(self.examples),
                "seed": self.seed, "packing": self.plan.as_dict()}

    def check_position(self, state: dict[str, Any]) -> int:
        """The step number of a checkpoint's data state, after checking it fits this data and plan."""
        expected = self.position(0)
        differs = [k for k in ("examples", "seed", "packing") if state.get(k) != expected[k]]
        if differs or "next" not in state:
            raise ValueError(
                f"the checkpoint's data position {state} does not fit this run's packed data {expected} "
                f"({', '.join(differs) or 'not a packed run'} differ): the training data, packing settings or "
                "seed changed since it was written"
            )
        self.next, self.pending = int(state["next"]), [int(i) for i in state["pending"]]
        return int(state["batches"])

    def example(self, position: int):
        """The text at a stream position (epoch = position // len(examples))."""
        epoch, i = divmod(position, len(self.examples))
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = np.random.default_rng([self.seed, self.host, epoch]).permutation(len(self.examples))
        return self.examples[self._orders[epoch][i]]

    def _collate(self, positions: list[int], step: int, buckets=None):
        """The collated batch of these texts, or None when it does not fit the grid."""
        from relex_jax.data.collate import collate

        if len(positions) > self.plan.max_texts:
            return None
        rng = random.Random(f"{self.seed}/{self.host}/{step}")
        batch = collate([self.example(p) for p in positions], self.tokenizer, self.collate_config, rng,
                        buckets=buckets or self.buckets)
        if batch.inputs.text_lengths.sum() > self.plan.max_words:
            return None
        lengths = batch.inputs.attention_mask.sum(1)
        if self.max_positions is not None and lengths.max() > self.max_positions:
            # under jit a position past the table would be clamped silently
            text = self.example(positions[int(lengths.argmax())])
            raise ValueError(f"training text {text.source or positions[int(lengths.argmax())]} takes "
                             f"{lengths.max()} tokens with its prompt, more than the encoder's "
                             f"{self.max_positions} absolute positions")
        try:
            first_fit(lengths, self.plan.tokens_per_row, self.plan.rows)
        except ValueError:
            return None
        return batch

    def _in_class(self, batch, positions: list[int], step: int):
        """`batch` padded to the first shape class holding its words and gold entities (collated
        again with that class's sizes: the same random draws, more padding)."""
        plan = self.plan
        words, gold = batch.inputs.span_mask.shape[1], batch.entity_mask.shape[1]
        sizes = next((c for c in zip(plan.word_sizes, plan.gold_entities) if c[0] >= words and c[1] >= gold), None)
        if sizes is None:  # the plan's last class holds every text of its data: other data reached the stream
            raise ValueError(f"a packed step needs {words} words and {gold} gold entities, more than the packing "
                             f"plan's largest shape class ({plan.word_sizes[-1]}, {plan.gold_entities[-1]})")
        if sizes == (words, gold):
            return batch
        return self._collate(positions, step, {**self.buckets, "words": [sizes[0]], "gold_entities": [sizes[1]]})

    def step_batch(self, step: int):
        """(PackedStepBatch, epoch, stream positions taken, packed inputs) of `step`; advances the stream."""
        from relex_jax.training.step import PackedStepBatch

        plan = self.plan
        queue = self.pending + list(range(self.next, self.next + plan.max_texts + LOOKAHEAD))
        count = min(plan.start_texts, len(queue))
        batch = self._collate(queue[:count], step)
        if batch is None:
            while batch is None:
                count -= 1
                if count == 0:
                    raise ValueError(f"training text at stream position {queue[0]} does not fit a packed row of "
                                     f"{plan.tokens_per_row} tokens")
                batch = self._collate(queue[:count], step)
        else:
            while (larger := self._collate(queue[: count + 1], step)) is not None:
                batch, count = larger, count + 1
        taken = queue[:count]
        looked = count + LOOKAHEAD
        for candidate in queue[count:looked]:
            if len(taken) == plan.max_texts:
                break
            filled = self._collate(taken + [candidate], step)
            if filled is not None:
                batch, taken = filled, taken + [candidate]
        batch = self._in_class(batch, taken, step)
        chosen = set(taken)
        self.pending = [p for p in queue[:looked] if p not in chosen]
        self.next = max(self.next, max(p for p in queue[:looked]) + 1)
        packed: PackedBatch = pack_batch(batch.inputs, plan.tokens_per_row, plan.rows, plan.max_texts,
                                         self.collate_config.pad_id, plan.max_words)
        epoch = min(taken) // len(self.examples)
        return PackedStepBatch.from_training_batch(batch, packed), epoch, taken, packed
