"""Optuna searches over a study's [search] space: space (the table, read and checked), checks (its
corners and sampler tried up front), job (where trials come from and how they are counted), summary
(the search's end, on the parent run and the terminal); command is `python -m bench.search`."""
