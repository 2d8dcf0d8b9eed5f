"""batchcast's benchmarks: one script per question, one JSON line per case, ratios in one run.

* ``python -m benchmarks.data``: writes synthetic SageMaker-format JSON Lines (the inputs).
* ``python -m benchmarks.sampling``: the model alone, sweeping series per sampling step,
  against a FLOP floor measured in the same run.
* ``python -m benchmarks.end_to_end``: ``batchcast transform`` on generated files, sweeping
  workers and input sizes, with the GluonTS and single-record baselines in the same run.
* ``python -m benchmarks.baselines``: the two baselines alone.

Benchmarks measure and print; they never assert a speed. They live here, never in ``tests/``.
"""
