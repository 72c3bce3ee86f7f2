"""The engine: a RunConfig trained to a Result (`train.fit`), its step, optimizer, checkpoints,
evaluation protocol and devices, and the run record its dataclasses declare (`record`)."""
