"""The device kit (python -m bench.kit): the studies' stack and data brought to an air-gapped GPU
machine, and what a run leaves brought back. `command` is the command, `build` makes a kit, `run`
installs one offline and runs a job, `manifest` says what a kit holds."""
