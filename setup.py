"""The wheel carries what the program reads at run time: the top-level ``resources/`` and
``packaging/`` folders are copied into the built ``engine`` package as ``engine/_data/``
(``engine.resources`` reads them there; in a checkout it reads the folders themselves).
Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("resources", "packaging")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the source tree's folders
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "engine" / "_data"
        for name in SHIPPED:
            shutil.copytree(root / name, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
