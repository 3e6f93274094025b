"""One run's life, in the order data flows: the start's checks (start.py), the loop (loop.py) and what each run
it trains writes (runs.py), the checkpoint (checkpoint.py), the record (record.py: results.json, metrics.jsonl),
TensorBoard (board.py), the run directory (rundir.py, names.py) and preemption (preemption.py).

Nothing is imported here: ``ganbench.run.names`` and ``ganbench.run.preemption`` load without torch, for a
process that only submits jobs.
"""
