"""The HAProxy driver: HAProxy 2.6's runtime API (the stats socket), no reload, no dropped connection.

HAProxy's bind line reads `ssl crt-list <crt_list> strict-sni` (see edge/haproxy_config.py). For each
name the driver keeps one PEM file in `cert_dir` (`<name>.pem`; a wildcard `*.example.com` is
`_wildcard.example.com.pem`: no host name holds an underscore, so no real name maps there) and one
crt-list line `<cert_dir>/<file> <name>`. The SNI filter pins the certificate to the one name
Certwright serves it for: without it HAProxy indexes a certificate under every name of its SANs, so a
customer's certificate that also lists a name another customer owns would compete for that name.
HAProxy still matches a wildcard filter to one label (`foo.example.com` gets `*.example.com`) and an
exact name wins over a wildcard. `strict-sni`: an unknown name fails the handshake, never gets a
customer's certificate as a default; HAProxy 2.6.12 starts with an empty crt-list (it warns that the
bind line has no certificate yet) and serves what the runtime API adds.

What HAProxy 2.6.12 does, and what the driver does about it:
- Runtime changes live in memory only: every change is also written to disk (the PEM, then the
  crt-list file, each atomically: temporary file, fsync, rename; PEMs mode 0600), after HAProxy
  accepted it, so a restart loads the same set and never a PEM HAProxy refused (a bad PEM in the
  crt-list would stop HAProxy from starting).
- One certificate transaction per process, kept across connections (`set ssl cert B` while A's is open
  updates A's): one connection, one transaction at a time, each reply checked for the file name; a
  transaction left open (by a crash, or a person at the socket) is aborted first.
- A request (command and payload) as large as `tune.bufsize` closes the connection and then makes
  HAProxy abort ("a bogus APPCTX is spinning"): the driver reads the buffer size from `show pools`
  and refuses, with DriverError, a bundle that would not fit with a margin. The shipped config raises
  tune.bufsize to 128 KiB, above any bundle Certwright accepts.
- An empty line ends a payload: PEMs are sent re-encoded (the PEM blocks only, 64 columns).

Speed: the connection stays open in interactive mode (`prompt`) and requests are pipelined (a batch is
written, then its replies read in order), so 10,000 certificates load in seconds. `start` compares
HAProxy's SHA-1 of each leaf (`show ssl cert F`) with the PEM file on disk and the fingerprint the agent
chose: names already in sync cost one `show` and one file read, nothing is uploaded again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.drivers import DriverError, Served
from edge.names import BadName, check_name, file_stem
from edge.store import atomic_write, fsync_dir

log = logging.getLogger("certwright.edge.haproxy")

# HAProxy's own default; used when `show pools` does not say (it always does on 2.6).
DEFAULT_BUFSIZE = 16384
# Kept free below tune.bufsize: a request of exactly bufsize bytes crashes HAProxy 2.6.12.
BUFFER_MARGIN = 1024
# Requests written before their replies are read: enough to hide the round trip, small enough that
# neither side's socket buffer fills while the other is writing.
PIPELINE = 64
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
# Characters the CLI parses (separators, comments, escapes, payload markers) or a crt-list line splits on.
UNSAFE_PATH = re.compile(r"[\s;#\\\[\]!<>*'\"]|[\x00-\x1f\x7f]")
PROMPT = b"\n> "


class ConnectionLost(DriverError):
    """The socket failed or HAProxy closed it (a restart, a reload): the next request reconnects."""


@dataclass(frozen=True)
class Bundle:
    """A PEM as HAProxy is sent it: the blocks re-encoded, no empty line; the leaf's two hashes."""

    payload: bytes
    sha256: str
    sha1: str


def bundle(served: Served) -> Bundle:
    """`served.pem` re-encoded for the CLI's payload; DriverError if it holds no certificate, no key,
    or a leaf that is not the fingerprint the agent chose."""
    blocks = PEM_BLOCK.findall(served.pem.encode())
    lines: list[bytes] = []
    leaf = None
    has_key = False
    for label, body in blocks:
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise DriverError(f"{served.name}: a PEM block ({label.decode()}) is not base64") from None
        if label == b"CERTIFICATE" and leaf is None:
            leaf = der
        has_key = has_key or label.endswith(b"PRIVATE KEY")
        encoded = base64.b64encode(der)
        lines.append(b"-----BEGIN " + label + b"-----")
        lines += [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
        lines.append(b"-----END " + label + b"-----")
    if leaf is None or not has_key:
        raise DriverError(f"{served.name}: the PEM needs a certificate and a private key")
    sha256 = hashlib.sha256(leaf).hexdigest()
    if sha256 != served.fingerprint.lower():
        raise DriverError(
            f"{served.name}: the PEM's leaf is {sha256[:16]}..., not the chosen {served.fingerprint[:16]}..."
        )
    return Bundle(b"\n".join(lines), sha256, hashlib.sha1(leaf).hexdigest().upper())  # noqa: S324 (HAProxy shows SHA-1)


def leaf_hashes(path: Path) -> tuple[str, str] | None:
    """(sha256 hex, SHA-1 HEX) of the first certificate of a PEM file; None if unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    match = PEM_BLOCK.search(data)
    if not match or match.group(1) != b"CERTIFICATE":
        return None
    try:
        der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return hashlib.sha256(der).hexdigest(), hashlib.sha1(der).hexdigest().upper()  # noqa: S324


@dataclass
class Request:
    """One CLI command (and payload); `check` says whether HAProxy's reply means success."""

    command: str
    payload: bytes | None = None
    reply: str = field(default="", init=False)

    def encode(self) -> bytes:
        if self.payload is None:
            return self.command.encode() + b"\n"
        # The payload's lines show up as "+ " prompts in the reply; an empty line ends it.
        return self.command.encode() + b" <<\n" + self.payload.rstrip(b"\n") + b"\n\n"


class RuntimeApi:
    """One connection to HAProxy's stats socket in interactive mode; requests are pipelined."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            sock.sendall(b"prompt\n")
        except OSError as error:
            sock.close()
            reason = error.strerror or error
            raise DriverError(f"cannot reach HAProxy's socket {self.path}: {reason}") from None
        self.sock = sock
        self.buffer = b""
        self._read_reply()

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def _read_reply(self) -> str:
        assert self.sock is not None
        while True:
            end = self.buffer.find(PROMPT)
            if end >= 0:
                reply, self.buffer = self.buffer[:end], self.buffer[end + len(PROMPT) :]
                text = reply.decode("utf-8", "replace")
                while text.startswith("+ "):  # one "+ " per payload line
                    text = text[2:]
                return text.strip("\n")
            try:
                chunk = self.sock.recv(262144)
            except OSError as error:
                self.close()
                raise ConnectionLost(f"HAProxy's socket {self.path}: {error.strerror or error}") from None
            if not chunk:
                self.close()
                raise ConnectionLost(
                    f"HAProxy closed its socket {self.path} (restarted? a request too large?)"
                )
            self.buffer += chunk

    def run(self, requests: list[Request]) -> None:
        """Sends `requests` (a batch, written at once) and fills in each one's reply, in order."""
        if self.sock is None:
            raise DriverError(f"not connected to HAProxy's socket {self.path}")
        try:
            self.sock.sendall(b"".join(request.encode() for request in requests))
        except OSError as error:
            self.close()
            raise ConnectionLost(f"HAProxy's socket {self.path}: {error.strerror or error}") from None
        for request in requests:
            request.reply = self._read_reply()

    def ask(self, command: str, payload: bytes | None = None) -> str:
        request = Request(command, payload)
        self.run([request])
        return request.reply

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def _first_line(reply: str) -> str:
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    return "; ".join(lines[:3])[:300] or "(no reply)"


class HaproxyDriver:
    def __init__(self, socket_path: str, crt_list: str, cert_dir: str, *, timeout: float = 60.0) -> None:
        self.crt_list = os.path.abspath(crt_list)
        self.cert_dir = Path(os.path.abspath(cert_dir))
        paths = (("the crt-list", self.crt_list), ("the certificate directory", str(self.cert_dir)))
        for what, path in paths:
            if UNSAFE_PATH.search(path):
                raise DriverError(
                    f"{what} path {path!r} holds a character HAProxy's CLI or crt-list would split on "
                    "(space, ; # \\ [ ] ! < > * quotes): choose another path"
                )
        try:
            self.cert_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise DriverError(f"cannot create {self.cert_dir}: {error.strerror}") from None
        self.api = RuntimeApi(socket_path, timeout)
        self.lock = threading.Lock()
        self.bufsize = DEFAULT_BUFSIZE
        self.listed: dict[str, str] = {}  # file -> its crt-list line's filters, as HAProxy holds them
        self.stored: set[str] = set()  # files in HAProxy's certificate store
        self.lines: dict[str, str] | None = None  # name -> file: the crt-list file on disk (None: unread)

    # -- names and files ---------------------------------------------------------------------------

    def file_of(self, name: str) -> str:
        """The absolute PEM path HAProxy knows `name` by (the crt-list file names the same path)."""
        try:
            check_name(name)
        except BadName as error:
            raise DriverError(str(error)) from None
        return str(self.cert_dir / f"{file_stem(name)}.pem")

    # -- what HAProxy holds ------------------------------------------------------------------------

    def _connect(self) -> None:
        """Opens the connection and reads HAProxy's state: buffer size, store, crt-list, open transaction."""
        self.api.connect()
        pools = self.api.ask("show pools")
        match = re.search(r"Pool buffer \((\d+) bytes\)", pools)
        self.bufsize = int(match.group(1)) if match else DEFAULT_BUFSIZE
        certs = self.api.ask("show ssl cert")
        self.stored = set()
        in_transaction = False
        for line in certs.splitlines():
            if line.startswith("#"):
                in_transaction = line.strip() == "# transaction"
            elif line.strip() and in_transaction:
                file = line.strip().lstrip("*")
                log.warning("aborting a certificate transaction left open in HAProxy for %s", file)
                self.api.ask(f"abort ssl cert {file}")
            elif line.strip():
                self.stored.add(line.strip())
        listing = self.api.ask(f"show ssl crt-list {self.crt_list}")
        if not listing.startswith("#"):
            self.api.close()
            raise DriverError(
                f"HAProxy has no crt-list {self.crt_list} ({_first_line(listing)}): its bind line must "
                f"read 'ssl crt-list {self.crt_list} strict-sni'"
            )
        self.listed = {}
        for line in listing.splitlines()[1:]:
            file, _, filters = line.strip().partition(" ")
            if file:
                self.listed[file] = filters.strip()

    def _ensure_connected(self) -> None:
        if not self.api.connected:
            self._connect()

    def max_payload(self) -> int:
        return self.bufsize - BUFFER_MARGIN

    # -- one name ----------------------------------------------------------------------------------

    def _upload_requests(self, file: str, name: str, payload: bytes) -> list[Request]:
        requests = []
        if file not in self.stored:
            requests.append(Request(f"new ssl cert {file}"))
        requests += [Request(f"set ssl cert {file}", payload), Request(f"commit ssl cert {file}")]
        if self.listed.get(file) != name:
            if file in self.listed:  # listed under other filters (edited by hand): list it again
                requests.append(Request(f"del ssl crt-list {self.crt_list} {file}"))
            requests.append(Request(f"add ssl crt-list {self.crt_list}", f"{file} {name}".encode()))
        return requests

    def _check_upload(self, file: str, name: str, requests: list[Request]) -> str | None:
        """Records what the replies say HAProxy now holds; the first failure's message, or None."""
        for request in requests:
            verb = request.command.split(" ", 3)[:3]
            reply = request.reply
            if verb[0] == "new":
                if "New empty certificate store" in reply or "already exists" in reply:
                    self.stored.add(file)
                    continue
                return f"new ssl cert: {_first_line(reply)}"
            if verb[0] == "set":
                if f"Transaction created for certificate {file}!" in reply:
                    continue
                if f"Transaction updated for certificate {file}!" in reply:
                    continue
                return f"set ssl cert: {_first_line(reply)}"
            if verb[0] == "commit":
                if f"Committing {file}" in reply and "Success!" in reply:
                    continue
                return f"commit ssl cert: {_first_line(reply)}"
            if verb[0] == "del":
                if f"Entry '{file}' deleted" in reply:
                    self.listed.pop(file, None)
                    continue
                return f"del ssl crt-list: {_first_line(reply)}"
            if verb[0] == "add":
                if f"Inserting certificate '{file}'" in reply and "Success!" in reply:
                    self.listed[file] = name
                    continue
                return f"add ssl crt-list: {_first_line(reply)}"
        return None

    def _recover(self, file: str) -> None:
        """After a failed upload: no transaction stays open, no empty store entry stays behind."""
        with contextlib.suppress(DriverError):
            self.api.ask(f"abort ssl cert {file}")
            if file not in self.listed and file in self.stored:
                show = self.api.ask(f"show ssl cert {file}")
                if "Status: Unused" in show or "SHA1 FingerPrint" not in show:
                    if "deleted" in self.api.ask(f"del ssl cert {file}"):
                        self.stored.discard(file)
        # Whatever state the replies left, read it again before the next change.
        self.api.close()

    def _payload(self, served: Served) -> Bundle:
        data = bundle(served)
        size = len(Request(f"set ssl cert {self.file_of(served.name)}", data.payload).encode())
        if size > self.max_payload():
            raise DriverError(
                f"{served.name}: the bundle ({size:,} bytes with the command) does not fit HAProxy's "
                f"buffer (tune.bufsize {self.bufsize:,}, of which {self.max_payload():,} usable): "
                "raise tune.bufsize; nothing was sent"
            )
        return data

    def _upload(self, served: Served, data: Bundle) -> None:
        file = self.file_of(served.name)
        for attempt in (1, 2):
            self._ensure_connected()
            requests = self._upload_requests(file, served.name, data.payload)
            self.api.run(requests)
            failure = self._check_upload(file, served.name, requests)
            if failure is None:
                return
            # Closes the connection: the next one starts by aborting any transaction left open (one
            # opened by someone else makes our `set` update theirs), so one more try can succeed.
            self._recover(file)
            if attempt == 2:
                raise DriverError(f"HAProxy refused {served.name}: {failure}")

    def _remove(self, name: str) -> None:
        self._remove_file(self.file_of(name))

    def _remove_file(self, file: str) -> None:
        """`del ssl crt-list` then `del ssl cert` (HAProxy deletes no certificate a crt-list still uses)."""
        self._ensure_connected()
        if file in self.listed:
            reply = self.api.ask(f"del ssl crt-list {self.crt_list} {file}")
            if f"Entry '{file}' deleted" not in reply:
                raise DriverError(f"HAProxy did not remove {file} from its crt-list: {_first_line(reply)}")
            self.listed.pop(file, None)
        if file in self.stored:
            reply = self.api.ask(f"del ssl cert {file}")
            if f"Certificate '{file}' deleted" not in reply and "doesn't exist" not in reply:
                raise DriverError(f"HAProxy did not delete the certificate {file}: {_first_line(reply)}")
            self.stored.discard(file)

    # -- disk --------------------------------------------------------------------------------------

    def _write_pem(self, file: str, data: Bundle, *, fsync: bool = True) -> None:
        atomic_write(Path(file), data.payload + b"\n", sync_dir=False, fsync=fsync)

    def _disk_lines(self) -> dict[str, str]:
        """The crt-list file as written (read once, when `apply` comes before `start`)."""
        if self.lines is None:
            self.lines = {}
            with contextlib.suppress(FileNotFoundError):
                for line in Path(self.crt_list).read_text().splitlines():
                    file, _, name = line.strip().partition(" ")
                    if file and name.strip():
                        self.lines[name.strip()] = file
        return self.lines

    def _write_crt_list(self) -> None:
        assert self.lines is not None
        lines = (f"{self.lines[name]} {name}\n".encode() for name in sorted(self.lines))
        atomic_write(Path(self.crt_list), lines, mode=0o644, sync_dir=False)
        fsync_dir(Path(self.crt_list).parent)
        fsync_dir(self.cert_dir)

    # -- the Driver interface ----------------------------------------------------------------------

    def start(self, served: Mapping[str, Served]) -> None:
        with self.lock:
            try:
                self._start(served)
            except OSError as error:
                raise DriverError(f"cannot write in {self.cert_dir}: {error.strerror}") from None

    def _start(self, served: Mapping[str, Served]) -> None:
        self._connect()
        wanted: dict[str, str] = {}  # file -> name
        for name in served:
            try:
                wanted[self.file_of(name)] = name
            except DriverError as error:
                log.error("not serving %s", error)
        # HAProxy's SHA-1 of each leaf it serves for a wanted name under the right filter.
        shown: dict[str, str] = {}
        in_sync = [file for file, name in wanted.items() if self.listed.get(file) == name]
        for start in range(0, len(in_sync), PIPELINE):
            requests = [Request(f"show ssl cert {file}") for file in in_sync[start : start + PIPELINE]]
            self.api.run(requests)
            for file, request in zip(in_sync[start : start + PIPELINE], requests, strict=True):
                match = re.search(r"^SHA1 FingerPrint: ([0-9A-F]+)$", request.reply, re.M)
                if match:
                    shown[file] = match.group(1)
        # Names HAProxy has that are not wanted (and files of this directory no one lists) go first.
        extra = [file for file in self.listed if file not in wanted]
        mine = f"{self.cert_dir}/"
        extra += [
            file
            for file in self.stored
            if file.startswith(mine) and file not in wanted and file not in self.listed
        ]
        for file in extra:
            self._remove_file(file)
        self.lines = {}
        counts = {"uploaded": 0, "in sync": 0, "refused": 0}
        batch: list[tuple[str, Served, Bundle]] = []
        for file, name in wanted.items():
            fingerprint = _fingerprint_of(served, name)
            on_disk = leaf_hashes(Path(file))
            if on_disk and on_disk[0] == fingerprint.lower() and shown.get(file) == on_disk[1]:
                self.lines[name] = file
                counts["in sync"] += 1
                continue
            try:
                item = served[name]
                batch.append((file, item, self._payload(item)))
            except DriverError as error:
                self._refuse(name, error, counts)
            if len(batch) >= PIPELINE:
                self._upload_batch(batch, counts)
                batch = []
        self._upload_batch(batch, counts)
        os.sync()  # one sync for all the PEMs written (an fsync each costs minutes at 10,000)
        self._write_crt_list()
        keep = {Path(file).name for file in self.lines.values()}
        for path in self.cert_dir.glob("*.pem"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
        fsync_dir(self.cert_dir)
        log.info(
            "HAProxy serves %d names: %d uploaded, %d already in sync, %d removed, %d refused",
            len(self.lines),
            counts["uploaded"],
            counts["in sync"],
            len(extra),
            counts["refused"],
        )

    def _refuse(self, name: str, error: DriverError, counts: dict[str, int]) -> None:
        """A name `start` cannot serve as chosen serves nothing (not an older certificate), and is logged:
        the agent counts it as applied, so the log is where an operator sees it."""
        log.error("not serving %s", error)
        counts["refused"] += 1
        self._remove(name)

    def _upload_batch(self, batch: list[tuple[str, Served, Bundle]], counts: dict[str, int]) -> None:
        """Uploads pipelined, then the PEMs written (synced once by the caller). A failure is tried again
        alone (a transaction it left open fails the rest of its batch too), then refused."""
        if not batch:
            return
        self._ensure_connected()
        sent = [
            (file, item, data, self._upload_requests(file, item.name, data.payload))
            for file, item, data in batch
        ]
        self.api.run([request for *_, requests in sent for request in requests])
        failed = []
        for file, item, data, requests in sent:
            if self._check_upload(file, item.name, requests) is None:
                self._write_pem(file, data, fsync=False)
                self.lines[item.name] = file
                counts["uploaded"] += 1
            else:
                failed.append((file, item, data))
        for file, item, data in failed:
            self._recover(file)
            try:
                self._upload(item, data)
            except DriverError as error:
                self._refuse(item.name, error, counts)
                continue
            self._write_pem(file, data, fsync=False)
            self.lines[item.name] = file
            counts["uploaded"] += 1

    def apply(self, name: str, served: Served | None) -> None:
        with self.lock:
            try:
                try:
                    self._apply(name, served)
                except ConnectionLost as error:
                    # An idle connection to an HAProxy that restarted or reloaded since: once more on a
                    # new one (a transaction the lost one left open is aborted when it connects).
                    log.info("reconnecting to HAProxy (%s)", error)
                    self._apply(name, served)
            except OSError as error:
                raise DriverError(f"cannot write {name} in {self.cert_dir}: {error.strerror}") from None

    def _apply(self, name: str, served: Served | None) -> None:
        file = self.file_of(name)
        self._ensure_connected()
        lines = self._disk_lines()
        if served is None:
            self._remove(name)
            lines.pop(name, None)
            self._write_crt_list()
            Path(file).unlink(missing_ok=True)
            return
        data = self._payload(served)
        self._upload(served, data)
        # On disk only once HAProxy took it: a PEM it refuses in the crt-list would stop it from starting.
        self._write_pem(file, data)
        if lines.get(name) != file:
            lines[name] = file
            self._write_crt_list()
        else:
            fsync_dir(self.cert_dir)

    def close(self) -> None:
        with self.lock:
            self.api.close()


def _fingerprint_of(served: Mapping[str, Served], name: str) -> str:
    """The fingerprint of `name` in `served`, without reading its PEM when the mapping can tell."""
    fingerprint_of = getattr(served, "fingerprint_of", None)
    if fingerprint_of is not None:
        return fingerprint_of(name)
    return served[name].fingerprint
