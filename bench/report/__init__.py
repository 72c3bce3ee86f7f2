"""Reports of a study's runs: read (MLflow into pandas, through bench.tracking), stats (the
comparisons, convergence, time to accuracy), build (one row per variant, provenance), render
(terminal, markdown, CSV, JSON) and figures; command is `python -m bench.report`."""
