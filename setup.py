"""Package layout (metadata is in pyproject.toml).

Everything installs under ``lossbound.``; the folders the design names stay at the repository
root and map into the package: ``pipelines/`` -> ``lossbound.pipelines``, ``evaluators/`` ->
``lossbound.evaluators``, ``conf/`` -> ``lossbound.conf`` (the Hydra configs, package data).
A technique or evaluator added as a sub-folder is found here without editing this file.
``lossbound/pipelines`` and ``lossbound/evaluators`` are symbolic links to those folders, so
tools that walk the package's own tree (``lint-imports`` run in a checkout) see one package;
the packages found through them and through the mapping are the same, listed once.
"""
from setuptools import find_packages, setup

ROOT_FOLDERS = {"pipelines": "lossbound.pipelines", "evaluators": "lossbound.evaluators"}

packages = find_packages(include=["lossbound", "lossbound.*"])
package_dir = {"lossbound": "lossbound"}
for folder, name in ROOT_FOLDERS.items():
    packages += [name + sub[len(folder):] for sub in find_packages(include=[folder, f"{folder}.*"])]
    package_dir[name] = folder
packages = sorted(set(packages))  # the links make find_packages see the mapped folders too
packages.append("lossbound.conf")
package_dir["lossbound.conf"] = "conf"

setup(packages=packages, package_dir=package_dir, package_data={"lossbound.conf": ["*.yaml", "**/*.yaml"],
                                                                     "lossbound.results": ["templates/*.j2"]},
      include_package_data=False)
