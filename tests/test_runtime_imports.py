"""The host-side half of inference imports and runs where JAX is not installed (a runtime that runs
an exported model): checked in a subprocess in which importing jax, flax, optax or orbax fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The start of a script in which importing jax, jaxlib, flax, optax or orbax fails.
BLOCK_JAX = textwrap.dedent('''
    import importlib.abc, sys

    class NoJax(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, NoJax())
''')

SCRIPT = BLOCK_JAX + textwrap.dedent('''
    import numpy as np

    import relex_jax
    from relex_jax.config import RelexConfig
    from relex_jax.data.labels import normalize_labels
    from relex_jax.data.processor import split_words
    from relex_jax.decoding import decode_entities, decode_relations, entities_to_dicts, relations_to_dicts
    from relex_jax.host import Piece, given_entities, split_pieces
    from relex_jax.modeling.encoder_configs import encoder_config
    from relex_jax.runtime import OnnxRelexModel
    from relex_jax.settings import InferenceSettings

    try:
        relex_jax.RelexModel
    except ImportError:
        pass
    else:
        raise AssertionError("the blocker let jax through")
    assert not {"jax", "flax", "optax", "orbax"} & {m.split(".")[0] for m in sys.modules}

    config = RelexConfig(encoder_config({"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2}),
                         max_width=2, max_len=4)
    settings = InferenceSettings(threshold=0.5, window_size=4, window_stride=2)
    settings.check_model(config)
    text = "Alice met Bob in Paris"
    words, starts, ends = split_words(text)
    assert split_pieces([words], settings, config) == [Piece(0, 0, words[:4]), Piece(0, 1, words[1:])]
    labels = normalize_labels(["person", "city"], 1)[0]
    relations = normalize_labels(["met"], 1, "relations", required=False)[0]

    logits = np.full((1, 5, 2, 2), -9.0, np.float32)  # (texts, words, widths, labels)
    logits[0, 0, 0, 0] = logits[0, 2, 0, 0] = logits[0, 4, 0, 1] = 3.0  # Alice, Bob: person; Paris: city
    spans = decode_entities(logits, [5], None, [labels.names], 0.5)
    index, mask = given_entities([[(0, 0), (2, 2)]], 1, config.max_width)  # the two persons
    pair_mask = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)
    relation_logits = np.full((*pair_mask.shape, 1), -9.0, np.float32)
    relation_logits[0, 0, 1, 0] = 2.0  # Alice met Bob
    rels = decode_relations(spans, index, mask, pair_mask, relation_logits, [relations.names], 0.5, config.max_width)
    entities = entities_to_dicts(spans[0], text, starts, ends)
    assert [(e["text"], e["label"]) for e in entities] == [("Alice", "person"), ("Bob", "person"), ("Paris", "city")]
    found = relations_to_dicts(rels[0], entities)
    assert [(r["head"]["text"], r["relation"], r["tail"]["text"]) for r in found] == [("Alice", "met", "Bob")]
    print("ok")
''')


def test_host_side_imports_and_decodes_without_jax():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
