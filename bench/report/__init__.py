"""Reports of a study's runs: read (MLflow into pandas, through bench.tracking), stats (the
comparisons, convergence, time to accuracy), variant_rows (one row per variant), published_figures (the
paper's and peers' figures beside them), build (the Report, provenance), render (terminal, markdown, CSV,
JSON) and figures; command is `python -m bench.report`."""
