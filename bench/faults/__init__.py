"""Fault injection, for real: ``python -m bench.faults [--quick] [--rows R2,R3] [--trials N]``.

A reproduction harness is trusted only if an interrupted, misconfigured or crowded run never
produces a wrong or missing result. Each row is exercised on the tiny scale of the ``mini``
profile (quick backbones, a 48-image Shapes world) with the real command-line programs run as
subprocesses, so that a SIGKILL is a SIGKILL and an exit code is an exit code. One module per
fault family, its docstring saying what must hold:

- R1 ``malformed_inputs``: bad specs, flags, dataset files, training configs.
- R2 ``sweep_kills``: SIGKILL of a sweep at named points and random moments, then a rerun.
- R3 ``training_kills``: SIGKILL of ``python -m ituning.train``, then the same command.
- R4 ``nonfinite_loss``: a NaN loss in one point of a sweep.
- R5 ``damaged_artefacts``: missing or corrupt backbones, data, shards, states, checkpoints.
- R6 ``unreachable_stores``: tracking server or optuna storage unreachable or locked.
- R7 ``concurrent_starts``: three sweeps started at once on a fresh runs folder.
- R8 ``untrusted_files``: YAML tags, code-running pickles, path traversal, the UI's binding.
- R9-R12 ``disk_full``, ``lost_results``, ``resource_bombs``, ``worker_death``.
- R13 ``several_machines``: three machines on a PostgreSQL queue and an MLflow server (``machines``,
  ``servers``), one killed mid-point while both servers restart.

Around them: ``harness`` (work folder, subprocesses, kills at pause points), ``trials`` (pass/fail
bookkeeping), ``inputs`` (the fake paper data root, malformed inputs), ``stores`` (what MLflow,
optuna and the run folders say afterwards), ``rows`` (the registry), ``report`` and ``cli``.

``--quick`` runs one trial per required case (about a third of the time), ``--trials N`` sets the
random-moment kills of R2 and R3 and the repeats of R7, ``--rows R2,R5`` picks rows, ``--keep DIR``
keeps the scratch folders (runs folders, logs) for a look after a failure. "Lost results" counts
finished points whose ``result.json`` changed or disappeared, or whose FINISHED MLflow run was
replaced or duplicated.
"""
