"""The files driver: one PEM per name (chain then key, mode 0600) and an index, for nginx and any
router that reads certificates from files.

In `--files-dir`: `<name>.pem` for each name served now (a wildcard `*.example.com` is
`_wildcard.example.com.pem`: host names hold no underscore, so no real name maps there) and
`index.json`, {name: {"file", "fingerprint", "not_after", "source"}}. Both are written atomically
(temporary file, fsync, rename), so a reader sees the old file or the new one, never half of one. A
name that serves nothing loses its PEM and its index entry. The index is rewritten on every change
(about 200 bytes a name), streamed to disk rather than built in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from edge.drivers import DriverError, Served
from edge.names import file_stem
from edge.store import atomic_write, fsync_dir

INDEX = "index.json"


def pem_file(name: str) -> str:
    """The PEM's file name in the directory: `<name>.pem`, a wildcard's `*.` spelled `_wildcard.`."""
    return f"{file_stem(name)}.pem"


class FilesDriver:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise DriverError(f"cannot create {self.directory}: {error.strerror}") from None
        # name -> (fingerprint, not_after ISO, source): what the index says, kept small for 100,000 names.
        self.entries: dict[str, tuple[str, str, str]] = {}

    def _write_pem(self, served: Served, *, fsync: bool = True) -> None:
        atomic_write(self.directory / pem_file(served.name), served.pem.encode(), sync_dir=False, fsync=fsync)
        self.entries[served.name] = (served.fingerprint, served.not_after.isoformat(), served.source)

    def _index_chunks(self) -> Iterator[bytes]:
        yield b"{"
        for count, name in enumerate(sorted(self.entries)):
            fingerprint, not_after, source = self.entries[name]
            entry = {"file": pem_file(name), "fingerprint": fingerprint}
            entry |= {"not_after": not_after, "source": source}
            yield (",\n" if count else "\n").encode() + f" {json.dumps(name)}: {json.dumps(entry)}".encode()
        yield b"\n}\n"

    def _write_index(self) -> None:
        atomic_write(self.directory / INDEX, self._index_chunks(), mode=0o644, sync_dir=False)
        fsync_dir(self.directory)

    def _previous(self) -> dict[str, tuple[str, str, str]]:
        """What an earlier run's index says, if it can be read."""
        try:
            index = json.loads((self.directory / INDEX).read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(index, dict):
            return {}
        previous = {}
        for name, entry in index.items():
            try:
                previous[name] = (entry["fingerprint"], entry["not_after"], entry["source"])
            except (TypeError, KeyError):
                continue
        return previous

    def start(self, served: Mapping[str, Served]) -> None:
        try:
            previous = self._previous()
            self.entries = {}
            for name in served:
                known = previous.get(name)
                if known and (self.directory / pem_file(name)).exists():
                    # Already written by an earlier run: keep it (reading each PEM from the store is
                    # what costs at 100,000 names).
                    if _fingerprint_of(served, name) == known[0]:
                        self.entries[name] = known
                        continue
                self._write_pem(served[name], fsync=False)
            del previous
            os.sync()  # one sync for all the PEMs (an fsync each costs minutes at 100,000 names)
            self._write_index()
            keep = {pem_file(name) for name in self.entries}
            for path in self.directory.glob("*.pem"):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
            fsync_dir(self.directory)
        except OSError as error:
            raise DriverError(f"cannot write in {self.directory}: {error.strerror}") from None

    def apply(self, name: str, served: Served | None) -> None:
        try:
            if served is None:
                (self.directory / pem_file(name)).unlink(missing_ok=True)
                self.entries.pop(name, None)
            else:
                self._write_pem(served)
            self._write_index()
        except OSError as error:
            raise DriverError(f"cannot write {name} in {self.directory}: {error.strerror}") from None

    def close(self) -> None:
        pass


def _fingerprint_of(served: Mapping[str, Served], name: str) -> str:
    """The fingerprint of `name` in `served`, without reading its PEM when the mapping can tell."""
    fingerprint_of = getattr(served, "fingerprint_of", None)
    if fingerprint_of is not None:
        return fingerprint_of(name)
    return served[name].fingerprint
