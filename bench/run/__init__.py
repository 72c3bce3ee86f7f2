"""Running studies and searches: studies as data, Optuna's storage as the queue (`runner`), who owns a
trial, resumption, packing runs onto a GPU, launching over processes, and where numbers come from."""
