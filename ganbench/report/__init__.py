"""The comparison of runs (``ganbench-report``, cli.py): tables (tables.py), figures (figures.py, gradnorm.py),
the BogoNet score (bogonet.py), a hyperparameter search's trials (search.py), the blind judging page
(judge.py) and the presets' paper claims (claims.py). It reads run directories only, never a live run.

Nothing is imported here: each module is loaded by name.
"""
