"""The reproduction report: runs read back from MLflow (``results``), the paper's published
numbers (``paper``), the claims as computed verdicts (``claims``), figures (``plots``), and the
Markdown report (``python -m bench.report``)."""
