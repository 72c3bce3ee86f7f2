"""python -m bench.benchmark: how fast the harness trains, and how close to the hardware's limit.

One command, one module per mode; every output carries the machine, the commit, the exact command
and the date.

steps (the default; bench.benchmark.steps)
    Per model configuration on a fixed batch: params, FLOPs, train/inference images/s and step
    time, peak memory, and on CUDA the MFU against the datasheet's bf16 peak and a measured matmul.
    Comma-separated values of --model, --batch-size, --precision, --channels-last, --compile and
    --image-size expand to their cartesian product; --rounds R measures the grid R times in
    alternating order and gives each pair of points a paired speed ratio with its interval.

Every speed ratio (here, in bench.benchmark.stream and .ddp, and in bench.post) comes from
bench.speed_ratio: alternating rounds, the median paired ratio, a 95 % interval, the load.
--end-to-end (end_to_end)
    Real epochs of bench.train's Engine against the tutorials' DataLoader loop, alternately.
--until ACC (time_to_accuracy)
    Trains a recipe until validation accuracy reaches ACC: seconds and epochs.
--tracking-overhead (tracking_overhead)
    What MLflow and Optuna add to each run of a study's smoke budget; the only mode that imports them.
--suite gpu (gpu, with budgets and gpu_report; its estimates in bench.run.budget_estimates)
    Everything above that matters on a CUDA machine, in one run of under 10 minutes, written to
    OUT/gpu-<device>.md and .json; runs without MLflow and Optuna. --smoke: the same at tiny sizes.
"""
