"""The reproduction report (``python -m bench.report``): runs read back from MLflow (``results``),
the paper's published numbers (``paper``), the claims as computed verdicts (``claims``), and
``build``, which writes the README from ``report_template.md`` and one module per part of it
(``comparison_tables``, ``figures``, ``ablations``, ``examples``, ``provenance``), with the figures
(``plots``) and a CSV of every table's numbers (``csv_tables``)."""
