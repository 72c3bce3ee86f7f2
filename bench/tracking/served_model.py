"""The script MLflow runs to load a run's pyfunc model (models from code: nothing is pickled).

It is logged with the model, and bench itself travels as the model's code path.
"""

from bench.tracking import serve_from_code

serve_from_code()
