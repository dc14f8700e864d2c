"""The Dataflow worker image must run the same stack as setup.py pins."""

from __future__ import annotations

import ast
import re
import sys

from tests import ROOT


def install_requires() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INSTALL_REQUIRES":
            pins = {}
            for requirement in ast.literal_eval(node.value):
                name, _, version = requirement.partition("==")
                pins[re.sub(r"\[.*\]", "", name)] = version
            return pins
    raise AssertionError("setup.py has no INSTALL_REQUIRES")


def test_every_runtime_requirement_is_pinned_exactly() -> None:
    pins = install_requires()
    assert {"tensorflow", "apache-beam", "tensorflow-transform", "scann", "pyarrow", "google-cloud-storage"} <= set(
        pins
    )
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values()), pins


def test_dockerfile_base_image_matches_beam_pin_and_python() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^FROM apache/beam_python(\d)\.(\d+)_sdk:(\S+)", dockerfile, re.MULTILINE)
    assert match, "Dockerfile must build FROM the Beam Python SDK image"
    python_version = (int(match.group(1)), int(match.group(2)))
    assert python_version == (3, 11)
    assert python_version == sys.version_info[:2], "workers must run the Python the pipeline is launched with"
    assert match.group(3) == install_requires()["apache-beam"]


def test_dockerfile_installs_every_package_directory() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup_source = (ROOT / "setup.py").read_text()
    packages = re.findall(r'"(\w+)\*"', setup_source)
    assert packages, "setup.py lists no packages"
    for package in packages:
        assert re.search(rf"^COPY {package} ", dockerfile, re.MULTILINE), f"Dockerfile does not copy {package}/"
    assert re.search(r"^RUN pip install .*\.$", dockerfile, re.MULTILINE)


def test_installed_versions_match_pins() -> None:
    from importlib.metadata import version

    for name, pinned in install_requires().items():
        assert version(name) == pinned, f"{name}: installed {version(name)}, setup.py pins {pinned}"


def test_every_package_directory_is_installed() -> None:
    """A package missing from setup.py works from a checkout but not on Dataflow workers."""
    listed = set(re.findall(r'"(\w+)\*"', (ROOT / "setup.py").read_text()))
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert on_disk == listed, f"setup.py packages {sorted(listed)} vs directories {sorted(on_disk)}"
