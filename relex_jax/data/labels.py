"""Label normalisation for inference: what users pass as entity / relation types -> per-text sets.

Accepted forms, as gliner (spec §2.2): a string, a list of strings, a `{name: description}`
mapping (the descriptions are the prompts the model reads, the names are what results carry),
or one list / mapping per text. Duplicate names are dropped keeping the first occurrence, as
gliner does. Where gliner crashes late or silently misbehaves we fail early and say why:
non-string labels, empty or whitespace-only labels, a text with no entity labels, per-text lists
whose count differs from the texts, and more than `MAX_LABELS` labels of one kind for one text.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

MAX_LABELS = 512  # per kind and text; each label adds prompt tokens to every window of that text


@dataclasses.dataclass(frozen=True)
class LabelSet:
    prompts: tuple[str, ...]  # what the model reads after <<ENT>> / <<REL>>
    names: tuple[str, ...]  # what results carry (equal to prompts unless descriptions were given)


def _one_set(labels, what: str) -> LabelSet:
    if isinstance(labels, str):
        labels = [labels]
    if isinstance(labels, Mapping):
        names, prompts = list(labels.keys()), list(labels.values())
    elif isinstance(labels, (list, tuple)):
        names = prompts = list(dict.fromkeys(labels)) if all(isinstance(x, str) for x in labels) else list(labels)
    else:
        raise TypeError(f"{what} must be a string, a list of strings or a {{name: description}} mapping, got {type(labels).__name__}")
    for i, (name, prompt) in enumerate(zip(names, prompts)):
        if not isinstance(name, str) or not isinstance(prompt, str):
            bad = name if not isinstance(name, str) else prompt
            raise TypeError(f"{what}: entry {i} is a {type(bad).__name__} ({bad!r}), labels must be strings")
        if not name.strip() or not prompt.strip():
            raise ValueError(f"{what}: entry {i} ({name!r}: {prompt!r}) is empty; every label needs a name")
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"{what}: two labels share a description; descriptions must be unique within a set")
    if len(prompts) > MAX_LABELS:
        raise ValueError(
            f"{what}: {len(prompts)} labels, more than {MAX_LABELS}; every label is a prompt the encoder "
            "reads with each text, so split the label set over several calls"
        )
    return LabelSet(tuple(prompts), tuple(names))


def normalize_labels(labels, num_texts: int, what: str = "labels", required: bool = True) -> list[LabelSet]:
    """One `LabelSet` per text. `required=False` (relation types) maps None / [] to empty sets.

    Per-text sets may be empty (the caller decides whether that text needs labels: an empty
    text does not)."""
    if labels is None or (isinstance(labels, (list, tuple)) and not labels):
        if required:
            raise ValueError(f"{what} is empty: name at least one type to extract")
        return [LabelSet((), ())] * num_texts
    per_text = isinstance(labels, (list, tuple)) and any(isinstance(x, (list, tuple, Mapping)) for x in labels)
    if not per_text:
        shared = _one_set(labels, what)
        if required and not shared.prompts:
            raise ValueError(f"{what} is empty: name at least one type to extract")
        return [shared] * num_texts
    if len(labels) != num_texts:
        raise ValueError(f"per-text {what} must have one entry per text: {len(labels)} sets for {num_texts} texts")
    sets = []
    for i, entry in enumerate(labels):
        if not isinstance(entry, (list, tuple, Mapping)):
            raise TypeError(f"per-text {what}: entry {i} is a {type(entry).__name__}; every entry must be a list or mapping")
        sets.append(_one_set(entry, f"{what} of text {i}"))
    return sets
