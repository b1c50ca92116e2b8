"""Data that ships inside the package: test judgments and topics (`qrels/`), the suite YAMLs
(`configs/`) and the bundled SciFact (`data/scifact`). Found through `importlib.resources`, so an
installed wheel has them as much as a checkout does (the checkout's top-level `qrels`, `configs` and
`data` are links to these folders, for people typing paths)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """A file or folder shipped with the package, as a path on disk."""
    return Path(str(files("dupmae_eval").joinpath("resources", *parts)))


def suite_path(name_or_path: str) -> Path:
    """A suite YAML given as a path, or by the name of a shipped suite ('beir', 'msmarco', 'local', 'demo')."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    shipped = resource_path("configs", f"{name_or_path}.yaml")
    return shipped if shipped.is_file() else path


def shipped_suites() -> list:
    """The names of the suites shipped with the package (what `suite_path` takes as a bare name)."""
    return sorted(path.stem for path in resource_path("configs").glob("*.yaml"))
