"""The config files of a workspace on disk: which files they are, and checking them.

:class:`ConfigFiles` belongs to the host. The files are given explicitly (relative paths are
taken from the root) or discovered: ``sidecar.toml`` or else ``cmdorc.toml`` in the root,
again on every :meth:`ConfigFiles.reload`. What a client has open and not saved is not here:
each session overlays its unsaved text (``sidecar.frontends.lsp.documents``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sidecar.core.checks import CheckReport, check_files
from sidecar.core.config import LoadedFile, read_source
from sidecar.core.problems import Problem, Severity
from sidecar.core.workspace import CONFIG_FILE_NAMES, find_config_files


def path_key(path: str | os.PathLike[str]) -> str:
    """A comparable form of a file path (absolute, symlinks resolved, case-normalised)."""
    try:
        resolved = Path(path).resolve()
    except OSError:
        resolved = Path(os.path.abspath(path))
    return os.path.normcase(str(resolved))


def index_of(files: Sequence[Path], path: str | os.PathLike[str]) -> int | None:
    """Where ``path`` is in ``files`` (path keys), or None."""
    key = path_key(path)
    for i, p in enumerate(files):
        if str(p) == key:
            return i
    return None


class ConfigFiles:
    """The configuration files of one workspace root and the last check of them on disk."""

    def __init__(self, root: Path, config_files: Sequence[str | os.PathLike[str]] | None = None
                 ) -> None:
        self.root = Path(root)
        self._explicit: list[Path] | None = None
        #: the config files, in config order (path keys)
        self.files: list[Path] = []
        #: the files as the last :meth:`reload` read them, and their check
        self.loaded: list[LoadedFile] = []
        self.report: CheckReport | None = None
        #: why the last :meth:`reload` has no config beyond its problems (no config file)
        self.last_error: str | None = None
        self.configure(root, config_files)

    def configure(self, root: Path,
                  config_files: Sequence[str | os.PathLike[str]] | None = None) -> None:
        """Set the root and, optionally, explicit files (None: discover them)."""
        self.root = Path(root)
        if config_files is None:
            self._explicit = None
        else:
            self._explicit = [Path(p) if Path(p).is_absolute() else self.root / p
                              for p in config_files]
        self.discover()

    @property
    def explicit(self) -> bool:
        """True when the files were given rather than discovered."""
        return self._explicit is not None

    def discover(self) -> None:
        files = list(self._explicit) if self._explicit is not None \
            else find_config_files(self.root)
        self.files = [Path(path_key(p)) for p in files]

    def is_config_file(self, path: Path) -> bool:
        """True for one of the workspace's config files, or for a config file name in the
        root when none exists yet (it is being created)."""
        if index_of(self.files, path) is not None:
            return True
        if self._explicit is None and not self.files and path.name in CONFIG_FILE_NAMES:
            return path_key(path.parent) == path_key(self.root)
        return False

    def load(self) -> list[LoadedFile]:
        """Read and parse every config file from disk."""
        return [read_source(p) for p in self.files]

    def reload(self) -> CheckReport:
        """Rediscover (unless explicit), read and check the files on disk. The report's
        ``config`` is None when they have errors or when there is no config file."""
        self.discover()
        if not self.files:
            self.last_error = (f"no {' or '.join(CONFIG_FILE_NAMES)} in {self.root}"
                               if self._explicit is None else "no config files given")
        else:
            self.last_error = None
        self.loaded = self.load()
        self.report = check_files(self.loaded) if self.loaded else CheckReport(None)
        return self.report

    def changed_on_disk(self) -> bool:
        """Whether the files on disk differ from what the last :meth:`reload` read (another
        file set, or other text)."""
        before = [Path(f.name) for f in self.loaded]
        self.discover()
        if [path_key(p) for p in before] != [str(p) for p in self.files]:
            return True
        for loaded in self.loaded:
            try:
                with open(loaded.name, encoding="utf-8", errors="surrogateescape") as f:
                    if f.read() != loaded.text:
                        return True
            except OSError:
                return True
        return False

    def errors(self) -> list[Problem]:
        """The errors of the last :meth:`reload`."""
        problems = self.report.problems if self.report is not None else []
        return [p for p in problems if p.severity == Severity.ERROR]

    def problem(self) -> str:
        """Why the last reload gave no config, in one line for a message."""
        if self.last_error:
            return self.last_error
        errors = self.errors()
        lines = [p.format() for p in errors[:5]]
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        return "; ".join(lines) + more if lines else "the configuration is invalid"
