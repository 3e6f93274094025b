"""Many runs: the Hydra launchers (slurm.py, the dry-run preview.py), the hyperparameter search (search.py: the
search's settings and read-back; optuna_search.py: the Optuna sweeper) and the summary a multirun prints
(summary.py). conf/hydra/launcher and conf/hydra/sweeper select them through hydra_plugins/.

Nothing is imported here: the submitting process stays light (no torch).
"""
