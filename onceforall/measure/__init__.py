"""The measurement layer, between ``run`` and ``workflows``: what eval, search, front and export all measure with.

- ``evaluator.py``: :class:`Evaluator`, the cached accuracies of a run's subnets (``eval/cache.json``), and
  ``eval_set``, the description of the images a result was measured on;
- ``candidates.py``: candidate subnets across the MACs buckets (skewed draws);
- ``predictor.py``: the accuracy predictor of a search, read from a file or fitted on cached measurements;
- ``costs.py``: the cost functions (MACs, latency table, peak memory, parameters), built in one place;
- ``scores.py``: per-image results of a Pareto curve (``curve_correct.json``), their scores and fingerprints;
- ``results.py``: the typed results of eval, search and search --front, each ``to_json()`` the file it writes.
"""
