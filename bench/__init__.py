"""The reproduction harness: sweeps (``bench.sweep``), the mini profile's backbones (``bench.mini``),
the report (``bench.report``), the end-to-end driver (``bench.reproduce``), the MLflow UI
(``bench.ui``), the performance benchmark (``bench.perf``) and the fault suite (``bench.faults``).
It imports the library ``ituning``; the library never imports it."""

from pathlib import Path

#: The checkout this harness runs from (specs, reports and the noxfile live here).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The declarative sweep specs, found by name (``table1`` -> ``sweeps/table1.yaml``).
SPECS_DIR = REPO_ROOT / "sweeps"
