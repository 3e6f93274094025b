"""Hydra launchers of ganbench (selected by conf/hydra/launcher/*.yaml through ``_target_``)."""
