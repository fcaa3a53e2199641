"""The files driver: one PEM per name (chain then key, mode 0600) and an index, for nginx and any
router that reads certificates from files.

In `--files-dir`: `<name>.pem` for each name served now (a wildcard `*.example.com` is
`_wildcard.example.com.pem`: host names hold no underscore, so no real name maps there) and
`index.json`, {name: {"file", "fingerprint", "not_after", "source"}}. Both are written atomically
(temporary file, fsync, rename), so a reader sees the old file or the new one, never half of one. A
name that serves nothing loses its PEM and its index entry. The index is rewritten on every change
(its size grows with the names: about 200 bytes each).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from edge.drivers import DriverError, Served
from edge.names import file_stem
from edge.store import atomic_write, fsync_dir

INDEX = "index.json"


class FilesDriver:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise DriverError(f"cannot create {self.directory}: {error.strerror}") from None
        self.index: dict[str, dict] = {}

    def _pem_file(self, name: str) -> str:
        return f"{file_stem(name)}.pem"

    def _write_pem(self, served: Served) -> None:
        atomic_write(self.directory / self._pem_file(served.name), served.pem.encode(), sync_dir=False)
        self.index[served.name] = {
            "file": self._pem_file(served.name),
            "fingerprint": served.fingerprint,
            "not_after": served.not_after.isoformat(),
            "source": served.source,
        }

    def _write_index(self) -> None:
        data = json.dumps(self.index, indent=1, sort_keys=True).encode()
        atomic_write(self.directory / INDEX, data, mode=0o644, sync_dir=False)
        fsync_dir(self.directory)

    def start(self, served: Mapping[str, Served]) -> None:
        try:
            previous = self._read_index()
            self.index = {}
            for name in served:
                known = previous.get(name)
                target = self.directory / self._pem_file(name)
                if known and known.get("fingerprint") == served[name].fingerprint and target.exists():
                    # Already written by an earlier run: keep it (reading the PEM from the store is
                    # what costs at 100,000 names).
                    self.index[name] = known
                    continue
                self._write_pem(served[name])
            self._write_index()
            keep = {entry["file"] for entry in self.index.values()}
            for path in self.directory.glob("*.pem"):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
            fsync_dir(self.directory)
        except OSError as error:
            raise DriverError(f"cannot write in {self.directory}: {error.strerror}") from None

    def _read_index(self) -> dict[str, dict]:
        try:
            index = json.loads((self.directory / INDEX).read_bytes())
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def apply(self, name: str, served: Served | None) -> None:
        try:
            if served is None:
                (self.directory / self._pem_file(name)).unlink(missing_ok=True)
                self.index.pop(name, None)
            else:
                self._write_pem(served)
            self._write_index()
        except OSError as error:
            raise DriverError(f"cannot write {name} in {self.directory}: {error.strerror}") from None

    def close(self) -> None:
        pass
