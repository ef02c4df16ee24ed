"""The sweep machinery: a spec's axes (``axes``, ``spec``) resolved under a profile (``profiles``)
into run plans, queued in optuna (``queue``), trained by workers in run folders (``folders``,
``worker``) and tracked in MLflow (``tracking``); ``python -m bench.sweep`` is ``cli``."""
