"""What the benchmark scripts (``scripts/bench_*.py``) share, each in one place:

- ``scores``: CER/WER with their edit counts, pooled over folds scored apart;
- ``folds``: the fold loop, merging reports of folds run apart, the wall-time budget;
- ``decoders``: the beam-search decoders each fold builds from its own training lines;
- ``kraken``: Kraken's recognizer trained beside htr on the same fold;
- ``timing``: throughput (median of timed passes) and FLOPs of a forward pass;
- ``report``: the scripts' options, the machine a figure was measured on, and the JSON they print.

The scripts and tests import it; the reading path (``htr.load_model``, ``htr transcribe``) never does
(``tests/test_layers.py``).
"""
