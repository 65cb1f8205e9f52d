"""The benchmark: walk-forward folds x policies x seeds x costs -> statistics that do not flatter -> report.

``python -m experiments.benchmark`` is the entry point; :func:`evaluation.benchmark.run_benchmark` the
library call.
"""
