from bench.errors import cli
from bench.search.command import main

# Guarded as bench/search.py was: a spawned child that re-imports the main module runs nothing.
if __name__ == "__main__":
    cli(main)
