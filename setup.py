"""Package discovery; everything else is in pyproject.toml.

pyproject.toml cannot both discover packages and map the top-level ``conf/`` folder to
``oe_lightning.conf``: the discovered ``oe_lightning.*`` packages and that one mapped package are
listed here.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["oe_lightning", "oe_lightning.*"]), "oe_lightning.conf"])
