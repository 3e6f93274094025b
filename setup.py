"""Packaging detail that pyproject.toml cannot express: ship the top-level conf/ inside the wheel as
ganbench/conf (so an installed ganbench finds its configs from any directory), next to the packages
found on disk, including the hydra_plugins namespace that Hydra scans for launchers."""
from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["ganbench", "ganbench.*", "hydra_plugins", "hydra_plugins.*"])
    + ["ganbench.conf"],
    package_dir={"ganbench.conf": "conf"},
    package_data={"ganbench.conf": ["*.yaml", "**/*.yaml"]},
)
