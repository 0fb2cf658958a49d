"""The locks (requirements/dev.txt for ./dev and CI, requirements/runtime.txt for the agent
image), read as data against pyproject.toml: made from its current dependency tables, exact
and hashed, one version per package on every Python the project supports, the image's
versions the tests' versions. Offline and without a resolver: a lock that is stale against
pyproject.toml fails here, and `./dev lock` refreshes it."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
LOCKS = {"dev": DEV_LOCK, "runtime": RUNTIME_LOCK}
REFRESH = "run ./dev lock and commit requirements/ with pyproject.toml"


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def fingerprint(data: dict) -> str:
    """What `./dev lock` stamps into each lock: the sha256 of pyproject's dependency tables
    as canonical JSON. Keep in step with the same few lines in ./dev."""
    project = data["project"]
    inputs = {
        "build-system.requires": data["build-system"]["requires"],
        "requires-python": project["requires-python"],
        "dependencies": project["dependencies"],
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def wanted(data: dict, lock: str) -> list[tuple[Requirement, str]]:
    """(requirement, the extra it comes from or "") that the lock must satisfy: dev.txt is
    compiled with every extra, runtime.txt with none; both carry the build backend, so the
    project installs with --no-build-isolation."""
    project = data["project"]
    out = [(Requirement(r), "") for r in project["dependencies"] + data["build-system"]["requires"]]
    if lock == "dev":
        for extra, reqs in project.get("optional-dependencies", {}).items():
            out += [(Requirement(r), extra) for r in reqs]
    return out


# --- reading a lock ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: frozenset[str]
    text: str

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(env)


def entries(text: str) -> list[str]:
    """The lock's logical lines: continuations joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        line = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not line and not buf:
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        out.append((buf + line.strip()).strip())
        buf = ""
    return [e for e in out if e]


def parse(text: str) -> list[Pin]:
    pins = []
    for entry in entries(text):
        assert not entry.startswith("-"), f"an option line in a lock (only pins belong there): {entry}"
        spec, *hashes = entry.split(" --hash=")
        req = Requirement(spec)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version \
            and not req.url, f"not an exact pin: {entry}"
        pins.append(Pin(canonicalize_name(req.name), Version(specs[0].version), req.marker,
                        frozenset(h.strip() for h in hashes), spec))
    return pins


@pytest.fixture(scope="module")
def locks() -> dict[str, list[Pin]]:
    return {name: parse(path.read_text()) for name, path in LOCKS.items()}


# --- the platforms a lock must serve ------------------------------------------------------------

def python_versions(data: dict, pins: list[Pin]) -> list[str]:
    """Linux CPython versions to evaluate markers at: each supported minor, this interpreter,
    and both sides of every Python version a lock's marker names (its forks)."""
    supported = SpecifierSet(data["project"]["requires-python"])
    candidates = {f"3.{minor}.0" for minor in range(8, 20)} | {".".join(map(str, sys.version_info[:3]))}
    for pin in pins:
        for v in re.findall(r"python_(?:full_)?version\s*[<>=!~]+\s*['\"]([\d.]+)['\"]", str(pin.marker or "")):
            major, minor, micro = (list(map(int, v.split("."))) + [0, 0])[:3]
            candidates |= {f"{major}.{minor}.{micro}", f"{major}.{minor}.{micro + 1}"}
    return sorted((v for v in candidates if v in supported), key=Version)


def linux_env(full_version: str) -> dict[str, str]:
    env = default_environment()
    env.update(implementation_name="cpython", platform_python_implementation="CPython",
               sys_platform="linux", platform_system="Linux", os_name="posix",
               platform_machine="x86_64", python_full_version=full_version,
               implementation_version=full_version,
               python_version=".".join(full_version.split(".")[:2]))
    return env


def applicable(pins: list[Pin], env: dict[str, str]) -> dict[str, list[Pin]]:
    out: dict[str, list[Pin]] = {}
    for pin in pins:
        if pin.applies(env):
            out.setdefault(pin.name, []).append(pin)
    return out


def platforms() -> list[str]:
    data = pyproject()
    pins = [p for path in LOCKS.values() for p in parse(path.read_text())]
    return python_versions(data, pins)


PLATFORMS = platforms()


# --- made from this pyproject.toml --------------------------------------------------------------

@pytest.mark.parametrize("lock", LOCKS)
def test_lock_was_made_from_the_current_pyproject(lock: str) -> None:
    stamps = re.findall(r"^# pyproject-sha256: ([0-9a-f]{64})$", LOCKS[lock].read_text(), re.M)
    assert stamps, f"{LOCKS[lock].name} has no pyproject-sha256 line: {REFRESH}"
    assert stamps == [fingerprint(pyproject())], \
        f"requirements/{lock}.txt is stale: pyproject.toml's dependencies changed since it was made; {REFRESH}"


def test_the_platforms_cover_every_supported_python() -> None:
    supported = SpecifierSet(pyproject()["project"]["requires-python"])
    minors = {".".join(v.split(".")[:2]) for v in PLATFORMS}
    assert {f"3.{m}" for m in range(8, 20) if f"3.{m}.0" in supported} <= minors
    assert "3.11.0" in PLATFORMS  # the agent image's and CI's Python


@pytest.mark.parametrize("python", PLATFORMS)
@pytest.mark.parametrize("lock", LOCKS)
def test_lock_satisfies_pyproject(locks, lock: str, python: str) -> None:
    env = linux_env(python)
    pins = applicable(locks[lock], env)
    problems = []
    for req, extra in wanted(pyproject(), lock):
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        found = pins.get(canonicalize_name(req.name), [])
        where = f"{req} ({'extra ' + extra if extra else 'dependencies'})"
        if len(found) != 1:
            problems.append(f"{where}: {len(found)} pins apply on Python {python}")
        elif not req.specifier.contains(found[0].version, prereleases=True):
            problems.append(f"{where}: the lock pins {found[0].version}")
    assert not problems, f"requirements/{lock}.txt is stale against pyproject.toml ({REFRESH}):\n" + \
        "\n".join(problems)


@pytest.mark.parametrize("python", PLATFORMS)
@pytest.mark.parametrize("lock", LOCKS)
def test_one_version_per_package(locks, lock: str, python: str) -> None:
    twice = {n: [p.text for p in ps] for n, ps in applicable(locks[lock], linux_env(python)).items()
             if len(ps) > 1}
    assert not twice, f"requirements/{lock}.txt pins these twice on Python {python}: {twice}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_has_hashes(locks, lock: str) -> None:
    assert locks[lock], f"requirements/{lock}.txt pins nothing"
    unhashed = [p.text for p in locks[lock] if not p.hashes]
    assert not unhashed, f"pins without --hash (pip --require-hashes rejects them): {unhashed}"
    malformed = [h for p in locks[lock] for h in p.hashes if not re.fullmatch(r"sha256:[0-9a-f]{64}", h)]
    assert not malformed, malformed


# --- the image runs what the tests ran -----------------------------------------------------------

@pytest.mark.parametrize("python", PLATFORMS)
def test_runtime_lock_takes_the_dev_locks_versions(locks, python: str) -> None:
    env = linux_env(python)
    dev = applicable(locks["dev"], env)
    runtime = applicable(locks["runtime"], env)
    differ = [f"{n}: runtime {ps[0].version}, dev {[p.version for p in dev.get(n, [])]}"
              for n, ps in runtime.items() if [p.version for p in dev.get(n, [])] != [ps[0].version]]
    assert not differ, f"the agent image would not run what the tests ran ({REFRESH}): {differ}"
    rehashed = [n for n, ps in runtime.items() if not ps[0].hashes <= dev[n][0].hashes]
    assert not rehashed, f"same versions, other files: {rehashed}"


def test_runtime_lock_holds_no_test_tools(locks) -> None:
    runtime = {p.name for p in locks["runtime"]}
    extras = pyproject()["project"]["optional-dependencies"]
    # The test suite's tools and the browser test's (`ui`: Playwright) stay out of the image.
    test_only = {canonicalize_name(Requirement(r).name) for extra in ("test", "ui") for r in extras.get(extra, [])}
    test_only -= {canonicalize_name(Requirement(r).name) for r in pyproject()["project"]["dependencies"]}
    # The build backend is in both locks (the image installs the project with it).
    test_only -= {canonicalize_name(Requirement(r).name) for r in pyproject()["build-system"]["requires"]}
    assert not runtime & test_only, runtime & test_only


def test_tests_run_against_the_dev_lock(locks) -> None:
    """The interpreter running the suite has every pin of dev.txt that applies to it (./dev
    builds .venv from it; anything installed on top is not checked)."""
    env = default_environment()
    wrong = []
    for name, [pin] in applicable(locks["dev"], env).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != pin.version:
            wrong.append(f"{name}: locked {pin.version}, installed {installed}")
    assert not wrong, "this environment is not the lock's (use ./dev test, which rebuilds .venv " \
        "when the lock changes):\n" + "\n".join(wrong)


# --- the parser itself -------------------------------------------------------------------------

def test_parser_reads_continuations_markers_and_hashes() -> None:
    text = (
        "# header\n"
        "# pyproject-sha256: " + "0" * 64 + "\n"
        "a-b==1.0 ; python_full_version < '3.12' \\\n"
        "    --hash=sha256:" + "1" * 64 + " \\\n"
        "    --hash=sha256:" + "2" * 64 + "\n"
        "    # via\n"
        "    #   c\n"
        "C_D==2.0 \\\n"
        "    --hash=sha256:" + "3" * 64 + "\n"
    )
    first, second = parse(text)
    assert (first.name, first.version, len(first.hashes)) == ("a-b", Version("1.0"), 2)
    assert first.applies(linux_env("3.11.4")) and not first.applies(linux_env("3.12.0"))
    assert (second.name, second.marker, len(second.hashes)) == ("c-d", None, 1)
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse("e>=1 \\\n    --hash=sha256:" + "4" * 64 + "\n")


def test_fork_boundaries_are_evaluated_on_both_sides() -> None:
    pins = parse("s==1 ; python_full_version < '3.11.5' --hash=sha256:" + "5" * 64 + "\n"
                 "s==2 ; python_full_version >= '3.11.5' --hash=sha256:" + "6" * 64 + "\n")
    versions = python_versions({"project": {"requires-python": ">=3.11,<3.14"}}, pins)
    assert {"3.11.0", "3.11.5", "3.11.6", "3.12.0", "3.13.0"} <= set(versions)
    assert "3.10.0" not in versions and "3.14.0" not in versions
