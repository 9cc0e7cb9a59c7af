"""The resumable job: a small JSON file (``job.json``) plus, per batch, its request and manifest files.

``job.json`` is rewritten whole on every change, through a temporary file and
``os.replace``, so a crash leaves either the old or the new state, never half of
one. It records each batch's key, its files, the API's ids (input file, batch,
output and error files), the last status seen, and what became of every request
line: ``stored`` (its rows are written), ``failed`` (for good, with the API's
reason), ``retry`` (to be resubmitted: expired, cancelled, a retryable error),
``moved`` (resubmitted in a later batch) or ``online`` (finished online). Line
sets are kept as ranges (``"0-24,31"``), failed and retry lines as
``{line: {"code", "reason"}}``; sections whose row the store refused as
``store_failed`` ``{id: reason}``. Which sections a line carries is in the
batch's manifest (``<key>.manifest.jsonl``, written once, before the upload).
``queue`` holds what the job learned of the enqueued-token queue (`queue.QueueBudget`:
the budget, the release lag, the refusals). The endpoint's URL is kept without its
``user:password@``: the folder never holds a credential.

One process at a time: the job directory is locked (``flock`` on ``job.lock``;
the lock dies with the process, so a killed run never blocks the next one).
"""

from __future__ import annotations

import array
import bisect
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, JobFolderError
from ..secrets import strip_url_userinfo

__all__ = ["JOB_FORMAT", "LINE_STATES", "JobStore", "SectionIndex", "format_lines", "parse_lines"]

JOB_FORMAT = 1
LINE_STATES = ("stored", "failed", "retry", "moved", "online")
"""What can become of a request line; a line in none of them is still with the API."""
DICT_STATES = ("failed", "retry")
"""States kept as ``{line: {"code", "reason"}}``; the others as line ranges."""
_LINE_BITS = 20  # a location is batch position << 20 | line (lines < 100,000)


def parse_lines(text: str | None) -> set[int]:
    """``"0-3,7"`` -> {0, 1, 2, 3, 7}."""
    lines: set[int] = set()
    for part in (text or "").split(","):
        if part:
            low, _, high = part.partition("-")
            lines.update(range(int(low), int(high or low) + 1))
    return lines


def format_lines(lines: set[int] | list[int]) -> str:
    """{0, 1, 2, 3, 7} -> ``"0-3,7"``."""
    parts: list[str] = []
    ordered = sorted(lines)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        parts.append(str(ordered[start]) if end == start else f"{ordered[start]}-{ordered[end]}")
        start = end + 1
    return ",".join(parts)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SectionIndex:
    """Which batch line holds each section of the job (its latest submission), and its hash prefix."""

    def __init__(self, ids: array.array, hashes: array.array, locations: array.array) -> None:
        order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: the latest submission of an id is last
        keep = [k for n, k in enumerate(order) if n + 1 == len(order) or ids[order[n + 1]] != ids[k]]
        self.ids = array.array("q", (ids[k] for k in keep))
        self.hashes = array.array("Q", (hashes[k] for k in keep))
        self.locations = array.array("q", (locations[k] for k in keep))

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, section_id: int) -> tuple[int, int, int] | None:
        """(hash prefix, batch position, line) of `section_id`, or None when the job never held it."""
        k = bisect.bisect_left(self.ids, section_id)
        if k == len(self.ids) or self.ids[k] != section_id:
            return None
        location = self.locations[k]
        return self.hashes[k], location >> _LINE_BITS, location & ((1 << _LINE_BITS) - 1)


def hash_prefix(digest: str) -> int:
    """The first 64 bits of a hex content hash (enough to tell an edited section)."""
    return int(digest[:16], 16)


class JobStore:
    """A job directory: ``job.json``, ``job.lock`` and each batch's ``.requests.jsonl`` / ``.manifest.jsonl``.

    Args:
        directory: The job's folder (created if missing).
        identity: What the job embeds with (model, dimensions, endpoint...): a job
            made with other settings is refused, its batches would not match.

    Raises:
        JobFolderError: The folder is a file, cannot be made, or cannot be written (checked before
            anything else: nothing is uploaded or paid for with a job that could not be saved).
        ConfigurationError: Another process holds the job, or it was made with other settings.
    """

    def __init__(self, directory: str | os.PathLike[str], identity: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "job.json"
        self._lock = self._open_folder()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ConfigurationError(f"the batch job in {self.directory} is in use by another process") from None
        try:
            self.data = self._load(identity)
        except BaseException:
            self.close()
            raise
        self.next_key = int(self.data["next_batch"])

    def _open_folder(self) -> Any:
        """Make the folder, check that files can be written in it, and open its lock file."""
        where = f"the batch job folder {self.directory}"
        if self.directory.exists() and not self.directory.is_dir():
            raise JobFolderError(f"{where} is a file, not a folder: pass another --job-dir (or move the file)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return open(self.directory / "job.lock", "a+")  # noqa: SIM115 - held while the job is open
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise JobFolderError(f"{where} cannot be written ({reason}): make it writable or pass another "
                                 "--job-dir") from None

    def _load(self, identity: dict[str, Any]) -> dict[str, Any]:
        if not self.path.exists():
            data = {"format": JOB_FORMAT, "job_id": uuid.uuid4().hex[:16], **identity, "created_at": _now(),
                    "updated_at": _now(), "next_batch": 1, "batches": []}
            self._write(data)
            return data
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the batch job {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != JOB_FORMAT:
            raise ConfigurationError(f"{self.path} is not a batch job file of format {JOB_FORMAT}")
        if isinstance(data.get("base_url"), str):  # a job written before URLs were kept without a credential
            data["base_url"] = strip_url_userinfo(data["base_url"])
        for name, value in identity.items():
            if data.get(name) != value:
                raise ConfigurationError(
                    f"the batch job in {self.directory} was made with {name}={data.get(name)!r}, not {value!r}: "
                    "use the same settings, or another job folder"
                )
        return data

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- saving ---------------------------------------------------------------------------
    def save(self) -> None:
        """Write ``job.json`` atomically (temporary file, fsync, rename)."""
        self.data["updated_at"] = _now()
        self._write(self.data)

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    # --- batches ----------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return str(self.data["job_id"])

    @property
    def batches(self) -> list[dict[str, Any]]:
        return self.data["batches"]

    def new_key(self) -> str:
        """The key of the next batch file (only kept once a batch is added)."""
        key = f"b{self.next_key:06d}"
        self.next_key += 1
        return key

    def add_batch(self, entry: dict[str, Any], origins: list[tuple[str, int]]) -> None:
        """Record a prepared batch; lines it copies (`origins`) become ``moved`` in the same save."""
        by_key = {batch["key"]: batch for batch in self.batches}
        moved: dict[str, set[int]] = {}
        for key, line in origins:
            moved.setdefault(key, set()).add(line)
        for key, lines in moved.items():
            self.settle_many(by_key[key], lines, "moved")
        self.batches.append({**entry, "state": "prepared", "prepared_at": _now()})
        self.data["next_batch"] = self.next_key
        self.save()

    def requests_path(self, key: str) -> Path:
        return self.directory / f"{key}.requests.jsonl"

    def manifest_path(self, key: str) -> Path:
        return self.directory / f"{key}.manifest.jsonl"

    def manifest(self, key: str) -> Iterator[dict[str, Any]]:
        """The manifest lines of batch `key`, in line order."""
        with open(self.manifest_path(key), "rb") as handle:
            for raw in handle:
                yield json.loads(raw)

    # --- line states ------------------------------------------------------------------------
    @staticmethod
    def lines(entry: dict[str, Any], state: str) -> set[int]:
        """The lines of `entry` in `state`."""
        if state in DICT_STATES:
            return {int(line) for line in entry.get(state) or {}}
        return parse_lines(entry.get(state))

    @classmethod
    def states(cls, entry: dict[str, Any]) -> dict[str, set[int]]:
        """Every state's lines of `entry`."""
        return {state: cls.lines(entry, state) for state in LINE_STATES}

    @staticmethod
    def why(entry: dict[str, Any], state: str, line: int) -> dict[str, str]:
        """``{"code", "reason"}`` of a line in a ``failed`` or ``retry`` state."""
        return dict((entry.get(state) or {}).get(str(line)) or {"code": "unknown", "reason": "no reason recorded"})

    def settle(self, entry: dict[str, Any], line: int, state: str, code: str = "", reason: str = "") -> None:
        """Put `line` of `entry` in `state` (out of any other); ``failed`` / ``retry`` keep `code` and `reason`."""
        for other in LINE_STATES:
            if other in DICT_STATES:
                (entry.get(other) or {}).pop(str(line), None)
            elif other != state and entry.get(other):
                lines = parse_lines(entry[other])
                if line in lines:
                    lines.discard(line)
                    entry[other] = format_lines(lines)
        if state in DICT_STATES:
            entry.setdefault(state, {})[str(line)] = {"code": code, "reason": reason}
        else:
            lines = parse_lines(entry.get(state))
            lines.add(line)
            entry[state] = format_lines(lines)

    def settle_many(self, entry: dict[str, Any], lines: set[int], state: str) -> None:
        """Put many lines in a range state (``stored``, ``moved``, ``online``) at once."""
        assert state not in DICT_STATES
        for other in LINE_STATES:
            if other in DICT_STATES:
                for line in lines:
                    (entry.get(other) or {}).pop(str(line), None)
            elif other != state and entry.get(other):
                entry[other] = format_lines(parse_lines(entry[other]) - lines)
        entry[state] = format_lines(parse_lines(entry.get(state)) | lines)

    def open_lines(self, entry: dict[str, Any]) -> set[int]:
        """Lines of `entry` with no outcome yet (still with the API)."""
        settled: set[int] = set()
        for lines in self.states(entry).values():
            settled |= lines
        return set(range(int(entry["lines"]))) - settled

    # --- sections -----------------------------------------------------------------------------
    def index(self) -> SectionIndex:
        """Where every section of the job was last submitted (moved lines live on in later batches)."""
        ids, hashes, locations = array.array("q"), array.array("Q"), array.array("q")
        for position, entry in enumerate(self.batches):
            moved = self.lines(entry, "moved")
            for line in self.manifest(entry["key"]):
                if line["line"] in moved:
                    continue
                location = position << _LINE_BITS | line["line"]
                for section in line["sections"]:
                    ids.append(section[0])
                    hashes.append(hash_prefix(section[1]))
                    locations.append(location)
        return SectionIndex(ids, hashes, locations)
