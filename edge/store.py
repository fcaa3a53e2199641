"""The agent's local store on disk: every name's candidates (with their keys) and the feed cursor.

Layout of the store directory (mode 0700):

    current -> gen-<n>          a symlink to the published generation, swapped atomically
    gen-<n>/names/<stem>.json   one file per name (mode 0600): line 1 the candidates without PEMs
                                (what selection needs, read at start), line 2 the PEMs, in order
    gen-<n>/cursor              {"cursor": N, "synced_at": ISO}: written only after the changes it
                                covers are in names/

A change rewrites one name's file atomically (a temporary file in the same directory, created 0600,
fsync, rename; the directory is fsynced before the cursor moves). A snapshot is written into a new
generation that is published only after its end line arrived (one sync, the cursor, then the symlink's
rename): an interrupted snapshot never replaces the store, and a completed one removes every name it
does not list. Left-overs of an interrupted write (temporary files, unpublished generations) are
removed when the store is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from edge.names import file_stem, name_of_stem
from edge.selection import Candidate, parse_candidates

KEY_FILE_MODE = 0o600
TMP_SUFFIX = ".tmp"


class StoreError(Exception):
    """The store cannot be read or written; the message names the file."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes | Iterable[bytes],
    *,
    mode: int = KEY_FILE_MODE,
    sync_dir: bool = True,
    fsync: bool = True,
) -> None:
    """Replace `path` with `data` atomically: a temporary file beside it, created with `mode` (never
    chmod-ed after the data is in), fsynced, renamed over; then the directory fsynced unless the caller
    syncs it once for a batch. `fsync=False` is for a caller that writes thousands of files and then
    calls os.sync() once before anything depends on them. `data` may be an iterable of chunks (a large
    file written without holding it whole in memory)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        # O_CREAT's mode applies only to a new file; a left-over temporary file could have another one.
        if os.fstat(fd).st_mode & 0o777 != mode:
            os.fchmod(fd, mode)
        for chunk in [data] if isinstance(data, bytes) else data:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def encode_entry(name: str, candidates: tuple[Candidate, ...], pems: tuple[str, ...]) -> bytes:
    meta = {"name": name, "candidates": [candidate.as_json() for candidate in candidates]}
    return (json.dumps(meta, separators=(",", ":")) + "\n" + json.dumps(list(pems)) + "\n").encode()


def _decode_meta(line: bytes, path: Path) -> tuple[str, tuple[Candidate, ...]]:
    try:
        meta = json.loads(line)
        raw = [{**candidate, "pem": "-----BEGIN CERTIFICATE-----"} for candidate in meta["candidates"]]
        candidates, _ = parse_candidates(raw)
        return meta["name"], candidates
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"{path} is damaged: {error}") from None


class Store:
    """The store in one directory; one agent process writes it (`status` only reads)."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory (no store there)")
        self.generation = self._published()
        if self.generation is None and create:
            self.generation = self._new_generation()
            self._publish(self.generation)
        if create:
            self._remove_leftovers()

    # -- layout ------------------------------------------------------------------------------------

    @property
    def names_dir(self) -> Path:
        return self.generation / "names"

    def _published(self) -> Path | None:
        link = self.root / "current"
        if not link.is_symlink():
            return None
        target = self.root / os.readlink(link)
        if not (target / "names").is_dir():
            raise StoreError(f"{link} points at {target}, which holds no names/ directory")
        return target

    def _new_generation(self) -> Path:
        generation = self.root / f"gen-{time.time_ns()}"
        (generation / "names").mkdir(mode=0o700, parents=True)
        return generation

    def _publish(self, generation: Path) -> None:
        link = self.root / "current"
        tmp = self.root / f"current{TMP_SUFFIX}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(generation.name, tmp)
        os.replace(tmp, link)
        fsync_dir(self.root)

    def _remove_leftovers(self) -> None:
        for path in self.root.iterdir():
            if path.name.startswith("gen-") and path != self.generation:
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(TMP_SUFFIX):
                path.unlink(missing_ok=True)
        for path in self.names_dir.glob(f".*{TMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    def path_of(self, name: str) -> Path:
        return self.names_dir / f"{file_stem(name)}.json"

    # -- reading -----------------------------------------------------------------------------------

    def load(self) -> Iterator[tuple[str, tuple[Candidate, ...]]]:
        """Every name and its candidates (no PEMs: only the first line of each file is read)."""
        with os.scandir(self.names_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                with open(path, "rb") as file:
                    name, candidates = _decode_meta(file.readline(), path)
                if name_of_stem(entry.name[: -len(".json")]) != name:
                    raise StoreError(f"{path} holds the name {name!r}, not the one its file name says")
                yield name, candidates

    def count(self) -> int:
        with os.scandir(self.names_dir) as entries:
            return sum(1 for e in entries if e.name.endswith(".json") and not e.name.startswith("."))

    def read_pem(self, name: str, fingerprint: str) -> str:
        """The PEM (chain and key) of `name`'s candidate with this fingerprint, from disk."""
        path = self.path_of(name)
        try:
            with open(path, "rb") as file:
                meta_line = file.readline()
                pems_line = file.readline()
        except FileNotFoundError:
            raise StoreError(f"{path} is missing") from None
        _, candidates = _decode_meta(meta_line, path)
        for candidate, pem in zip(candidates, _decode_pems(pems_line, path), strict=False):
            if candidate.fingerprint == fingerprint:
                return pem
        raise StoreError(f"{path} holds no certificate {fingerprint[:16]}")

    def cursor(self) -> int | None:
        state = self.sync_state()
        return state["cursor"] if state else None

    def sync_state(self) -> dict | None:
        """{"cursor": N, "synced_at": ISO} or None when the store has never synced."""
        path = self.generation / "cursor"
        try:
            state = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            raise StoreError(f"{path} is damaged") from None
        if not isinstance(state, dict) or not isinstance(state.get("cursor"), int):
            raise StoreError(f"{path} holds no cursor")
        return state

    # -- writing -----------------------------------------------------------------------------------

    def put(self, name: str, candidates: tuple[Candidate, ...], pems: tuple[str, ...]) -> None:
        """Store `name`'s candidates (none: remove the name). The directory is synced by `sync()`."""
        path = self.path_of(name)
        if candidates:
            atomic_write(path, encode_entry(name, candidates, pems), sync_dir=False)
        else:
            path.unlink(missing_ok=True)

    def sync(self) -> None:
        """Make the renames and removals of `put` durable (before the cursor moves past them)."""
        fsync_dir(self.names_dir)

    def write_cursor(self, cursor: int, *, synced_at: datetime | None = None) -> None:
        state = {"cursor": cursor, "synced_at": (synced_at or datetime.now(UTC)).isoformat()}
        atomic_write(self.generation / "cursor", json.dumps(state).encode(), mode=0o644)

    def begin_snapshot(self) -> SnapshotWriter:
        return SnapshotWriter(self)


class SnapshotWriter:
    """A snapshot being written into a new, unpublished generation; `commit` publishes it, `abort`
    (or an exception in a `with` block) throws it away."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.generation = store._new_generation()
        self.names = 0
        self.done = False

    def put(self, name: str, candidates: tuple[Candidate, ...], pems: tuple[str, ...]) -> None:
        if not candidates:
            return
        path = self.generation / "names" / f"{file_stem(name)}.json"
        # A fresh directory nobody reads yet: no temporary file, and one sync at commit for all files.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, KEY_FILE_MODE)
        try:
            with os.fdopen(fd, "wb", closefd=False) as file:
                file.write(encode_entry(name, candidates, pems))
        finally:
            os.close(fd)
        self.names += 1

    def commit(self, cursor: int) -> None:
        """Publish the snapshot as the store, consistent with `cursor`; the old generation goes."""
        os.sync()  # every file of the generation on disk before the cursor and the symlink say so
        fsync_dir(self.generation / "names")
        self.store.generation, old = self.generation, self.store.generation
        self.store.write_cursor(cursor)
        self.store._publish(self.generation)
        self.done = True
        if old != self.generation:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        if not self.done:
            shutil.rmtree(self.generation, ignore_errors=True)
            self.done = True

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _decode_pems(line: bytes, path: Path) -> list[str]:
    try:
        pems = json.loads(line)
    except ValueError:
        raise StoreError(f"{path} is damaged (its PEMs do not parse)") from None
    if not isinstance(pems, list):
        raise StoreError(f"{path} is damaged (no list of PEMs)")
    return pems
