from bench.benchmark.command import main
from bench.errors import cli

if __name__ == "__main__":  # a spawned worker of the GPU suite imports this module too
    cli(main)
