"""The learning-rate search that makes the method comparison fair (``python -m bench.tune``)."""
