"""Training data recorded as MCAP in rosbag2's layout, complete on disk after every write.

A bag is a directory holding ``metadata.yaml`` and one or more ``.mcap`` files (splits), exactly
the layout ``ros2 bag record -s mcap`` produces, so ``ros2 bag info/play``, Foxglove and
third-party readers (e.g. ``rosbags``) open it. Each channel carries CDR messages (serialised by
rclpy) and a ``ros2msg`` schema: the type's .msg text followed by every nested type's .msg text,
each after a line of 80 ``=`` and a ``MSG: pkg/msg/Type`` line (rosbag2's message definition
encoding).

Crash safety, the reason this is not a plain streaming writer: every :meth:`BagWriter.write`
rewrites the current split to a temporary file (all of its messages so far, with index and
footer), fsyncs it and renames it over the split, then replaces ``metadata.yaml`` the same way.
A process killed at any instant therefore leaves a bag whose listed files are all complete MCAP
files holding every message whose ``write`` returned: nothing acknowledged is lost and any reader
opens it as is (a streaming MCAP writer would leave a file without footer, which indexed readers
refuse). The cost is rewriting the current split on each write; a split is closed when it passes
``max_split_bytes`` or on :meth:`BagWriter.split` (the trainer splits once per iteration), which
keeps it small. The only window is between the rename of a new split and the metadata update;
:func:`reindex` (run by a writer that reopens the bag) closes it, as ``ros2 bag reindex`` does.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer
from rclpy.serialization import deserialize_message, serialize_message
from rosidl_parser.definition import (
    AbstractSequence,
    AbstractString,
    AbstractWString,
    Array,
    BasicType,
    NamespacedType,
)

ROSBAG2_VERSION = 9
"""metadata.yaml format written (rosbag2 Jazzy and later)."""
DELIMITER = "=" * 80
PRIMITIVES = frozenset({
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring",
})
_FIELD_TYPE = re.compile(r"^([A-Za-z][\w/]*)")
"""The type token of a .msg field line (array and bound suffixes are dropped)."""
RELIABLE_QOS = [{
    "history": "keep_last", "depth": 100, "reliability": "reliable", "durability": "volatile",
    "deadline": {"sec": 0, "nsec": 0}, "lifespan": {"sec": 0, "nsec": 0},
    "liveliness": "automatic", "liveliness_lease_duration": {"sec": 0, "nsec": 0},
    "avoid_ros_namespace_conventions": False,
}]
"""Offered QoS stored with every topic (what a reliable rclpy publisher offers)."""


class _NoAliasDumper(yaml.SafeDumper):
    """YAML without anchors/aliases (every topic repeats its QoS, as rosbag2 writes it)."""

    def ignore_aliases(self, data) -> bool:
        return True


class RecordingError(RuntimeError):
    """A bag that cannot be written or read (missing definitions, foreign files, bad layout)."""


# ------------------------------------------------------------------------------- definitions

def type_name(msg_type) -> str:
    """``pkg/msg/Type`` of an rclpy message class (or instance)."""
    cls = msg_type if isinstance(msg_type, type) else type(msg_type)
    package = cls.__module__.split(".")[0]
    return f"{package}/msg/{cls.__name__}"


def message_class(name: str):
    """The rclpy message class of ``pkg/msg/Type`` (or ``pkg/Type``)."""
    package, *_, type_ = name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), type_)
    except (ImportError, AttributeError) as err:
        raise RecordingError(f"message type {name!r} is not importable ({err})") from err


def _share_file(name: str, suffix: str) -> Path:
    package, *_, type_ = name.split("/")
    try:
        share = Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError) as err:
        raise RecordingError(f"{name}: package {package!r} is not on AMENT_PREFIX_PATH "
                             f"({os.environ.get('AMENT_PREFIX_PATH', '')!r})") from err
    path = share / "msg" / f"{type_}{suffix}"
    if not path.is_file():
        raise RecordingError(f"{name}: expected its definition at {path}, found none")
    return path


def _dependencies(text: str, package: str) -> list[str]:
    """Nested message types named by the field lines of a .msg text, as ``pkg/msg/Type``."""
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = _FIELD_TYPE.match(line)
        if not match:
            continue
        token = match.group(1)
        if token in PRIMITIVES:
            continue
        if "/" in token:
            pkg, *_, type_ = token.split("/")
        elif token == "Header":
            pkg, type_ = "std_msgs", "Header"
        else:
            pkg, type_ = package, token
        name = f"{pkg}/msg/{type_}"
        if name not in found:
            found.append(name)
    return found


@cache
def message_definition(name: str) -> str:
    """The ``ros2msg`` schema text of ``pkg/msg/Type``: its .msg file, then each nested type's
    (depth first, each once) after the 80-``=`` delimiter and a ``MSG: pkg/msg/Type`` line."""
    top = _share_file(name, ".msg").read_text()
    parts, seen, stack = [top.rstrip("\n")], {name}, list(reversed(
        _dependencies(top, name.split("/")[0])))
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        text = _share_file(dep, ".msg").read_text()
        parts.append(f"{DELIMITER}\nMSG: {dep}\n{text.rstrip(chr(10))}")
        stack.extend(reversed(_dependencies(text, dep.split("/")[0])))
    return "\n".join(parts) + "\n"


@cache
def type_hash(name: str) -> str:
    """rosidl's ``RIHS01_...`` type description hash of ``pkg/msg/Type`` ('' if not installed)."""
    try:
        data = json.loads(_share_file(name, ".json").read_text())
    except (RecordingError, ValueError):
        return ""
    for entry in data.get("type_hashes", []):
        if entry.get("type_name") == name:
            return str(entry.get("hash_string", ""))
    return ""


# ------------------------------------------------------------------------------- serialisation

_CDR_SIZES = {"boolean": 1, "octet": 1, "char": 1, "int8": 1, "uint8": 1, "int16": 2,
              "uint16": 2, "wchar": 2, "int32": 4, "uint32": 4, "float": 4, "int64": 8,
              "uint64": 8, "double": 8, "long double": 16}


def _align(pos: int, size: int) -> int:
    return pos + (-pos) % size


def _cdr_end(value, kind, pos: int) -> int:
    """Offset (after the 4-byte encapsulation header) where ``value`` of rosidl type ``kind``
    ends when CDR-serialised from ``pos`` (plain CDR, little endian, 8-byte alignment max)."""
    if isinstance(kind, BasicType):
        size = _CDR_SIZES[kind.typename]
        return _align(pos, min(size, 8)) + size
    if isinstance(kind, AbstractString):
        return _align(pos, 4) + 4 + len(value.encode()) + 1
    if isinstance(kind, AbstractWString):
        raise RecordingError("wstring fields are not supported by the recorder")
    if isinstance(kind, NamespacedType):
        return _message_end(value, pos)
    if isinstance(kind, (AbstractSequence, Array)):
        if isinstance(kind, AbstractSequence):
            pos = _align(pos, 4) + 4
        element = kind.value_type
        if isinstance(element, BasicType):
            if len(value) == 0:
                return pos
            size = _CDR_SIZES[element.typename]
            return _align(pos, min(size, 8)) + size * len(value)
        for item in value:
            pos = _cdr_end(item, element, pos)
        return pos
    raise RecordingError(f"unsupported field type {kind!r}")


def _message_end(msg, pos: int) -> int:
    kinds = type(msg).SLOT_TYPES
    if not kinds:  # an empty message is serialised as one placeholder byte
        return pos + 1
    for slot, kind in zip(type(msg).__slots__, kinds, strict=False):
        pos = _cdr_end(getattr(msg, slot), kind, pos)
    return pos


def serialize(msg) -> bytes:
    """CDR bytes of ``msg`` as rclpy serialises them, cut to the message's length.

    rmw_fastrtps sizes the buffer it returns by its estimate of the serialised size, which can
    exceed the real one (8 stray bytes for a JointState here); strict readers such as rosbags
    refuse such records, so the tail beyond the last field is dropped.
    """
    data = serialize_message(msg)
    end = 4 + _message_end(msg, 0)
    return data[:end] if end <= len(data) else data


# ----------------------------------------------------------------------------------- writing

@dataclass
class _Split:
    """The split being written: its messages are kept so the file can be rewritten whole."""

    path: Path
    messages: list[tuple[str, int, bytes]] = field(default_factory=list)
    size: int = 0


@dataclass
class _FileInfo:
    path: str
    start: int
    end: int
    count: int
    topics: dict[str, int]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, writer, sync: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        writer(f)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


class BagWriter:
    """Appends messages to a rosbag2 MCAP bag; see the module docstring for the on-disk promise.

    Opening an existing bag appends to it: its files are kept untouched (after :func:`reindex`
    lists any file a killed writer left unlisted) and writing continues in a new split. Topics must
    keep their type.

    Args:
        path: the bag directory (created if missing).
        max_split_bytes: start a new split once the current one holds this many bytes.
        sync: fsync files and metadata (survives power loss, not just a killed process).
    """

    def __init__(self, path: str | os.PathLike, max_split_bytes: int = 8 << 20,
                 sync: bool = True) -> None:
        self.path = Path(path)
        self.max_split_bytes = int(max_split_bytes)
        self.sync = sync
        self.path.mkdir(parents=True, exist_ok=True)
        self._topics: dict[str, str] = {}
        self._files: list[_FileInfo] = []
        if (self.path / "metadata.yaml").exists() or any(self.path.glob("*.mcap")):
            info = reindex(self.path)
            self._topics = dict(info.topics)
            self._files = list(info.files)
        self._split: _Split | None = None
        self._closed = False

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def message_count(self) -> int:
        """Messages in the bag, all splits."""
        return sum(f.count for f in self._files)

    def write(self, topic: str, msg, stamp_ns: int | None = None) -> None:
        """Serialise ``msg`` (CDR) onto ``topic`` and make it durable before returning.

        Raises:
            RecordingError: the writer is closed, or ``topic`` was recorded with another type.
        """
        if self._closed:
            raise RecordingError(f"{self.path}: write after close")
        name = type_name(msg)
        known = self._topics.setdefault(topic, name)
        if known != name:
            raise RecordingError(f"topic {topic}: expected type {known}, found {name}")
        data = serialize(msg)
        stamp = time.time_ns() if stamp_ns is None else int(stamp_ns)
        if self._split is None:
            self._split = _Split(self._next_path())
        self._split.messages.append((topic, stamp, data))
        self._split.size += len(data)
        self._flush_split()
        if self._split.size >= self.max_split_bytes:
            self._split = None

    def split(self) -> None:
        """Close the current split: the next message starts a new file."""
        self._split = None

    def close(self) -> None:
        """Finish (every write is already on disk; this only refuses further writes)."""
        self._split = None
        self._closed = True

    def _next_path(self) -> Path:
        taken = {f.path for f in self._files} | {p.name for p in self.path.glob("*.mcap")}
        index = len(self._files)
        while f"{self.path.name}_{index}.mcap" in taken:
            index += 1
        return self.path / f"{self.path.name}_{index}.mcap"

    def _flush_split(self) -> None:
        split = self._split
        topics = {t: self._topics[t] for t, _, _ in split.messages}

        def write_mcap(f) -> None:
            writer = Writer(f, compression=CompressionType.ZSTD)
            writer.start(profile="ros2", library="mbpl_ros.recording")
            channels = {}
            for topic, type_ in topics.items():
                schema = writer.register_schema(type_, "ros2msg",
                                                message_definition(type_).encode())
                channels[topic] = writer.register_channel(
                    topic, "cdr", schema,
                    {"offered_qos_profiles": yaml.safe_dump(RELIABLE_QOS),
                     "topic_type_hash": type_hash(type_)})
            for seq, (topic, stamp, data) in enumerate(split.messages):
                writer.add_message(channels[topic], stamp, data, stamp, sequence=seq)
            writer.finish()

        _atomic_write(split.path, write_mcap, self.sync)
        stamps = [s for _, s, _ in split.messages]
        counts: dict[str, int] = {}
        for topic, _, _ in split.messages:
            counts[topic] = counts.get(topic, 0) + 1
        info = _FileInfo(split.path.name, min(stamps), max(stamps), len(stamps), counts)
        if self._files and self._files[-1].path == info.path:
            self._files[-1] = info
        else:
            self._files.append(info)
        if self.sync and len(split.messages) == 1:
            _fsync_dir(self.path)
        _write_metadata(self.path, self._topics, self._files, self.sync)


def _write_metadata(path: Path, topics: dict[str, str], files: list[_FileInfo],
                    sync: bool = True) -> None:
    counts: dict[str, int] = dict.fromkeys(topics, 0)
    for f in files:
        for topic, n in f.topics.items():
            counts[topic] = counts.get(topic, 0) + n
    start = min((f.start for f in files if f.count), default=0)
    end = max((f.end for f in files if f.count), default=0)
    info = {
        "version": ROSBAG2_VERSION,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": max(0, end - start)},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": sum(f.count for f in files),
        "topics_with_message_count": [
            {"topic_metadata": {"name": topic, "type": type_, "serialization_format": "cdr",
                                "offered_qos_profiles": RELIABLE_QOS,
                                "type_description_hash": type_hash(type_)},
             "message_count": counts.get(topic, 0)}
            for topic, type_ in topics.items()],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [f.path for f in files],
        "files": [{"path": f.path, "starting_time": {"nanoseconds_since_epoch": f.start},
                   "duration": {"nanoseconds": max(0, f.end - f.start)},
                   "message_count": f.count} for f in files],
        "custom_data": {},
        "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
    }
    text = yaml.dump({"rosbag2_bagfile_information": info}, Dumper=_NoAliasDumper,
                     sort_keys=False)
    _atomic_write(path / "metadata.yaml", lambda f: f.write(text.encode()), sync)


# ----------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class BagInfo:
    """What :func:`reindex` found: topic types and per-file statistics."""

    topics: dict[str, str]
    files: list[_FileInfo]

    @property
    def message_count(self) -> int:
        return sum(f.count for f in self.files)


def _file_number(path: Path) -> tuple[int, str]:
    match = re.search(r"_(\d+)\.mcap$", path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _scan(path: Path) -> tuple[dict[str, str], _FileInfo] | None:
    """Topic types and statistics of one complete MCAP file; None if it is not readable."""
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            summary = reader.get_summary()
            if summary is None or summary.statistics is None:
                return None
            topics = {c.topic: summary.schemas[c.schema_id].name
                      for c in summary.channels.values()}
            stats = summary.statistics
            per_topic = {summary.channels[cid].topic: n
                         for cid, n in stats.channel_message_counts.items()}
            return topics, _FileInfo(path.name, stats.message_start_time,
                                     stats.message_end_time, stats.message_count, per_topic)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not listed
        return None


def reindex(path: str | os.PathLike) -> BagInfo:
    """Rebuild ``metadata.yaml`` from the bag's complete .mcap files (``ros2 bag reindex``).

    Files a killed writer left half-written (only ever temporary names) are removed.

    Raises:
        RecordingError: ``path`` is not a directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise RecordingError(f"{path}: expected a bag directory")
    for stale in path.glob(".*.tmp"):  # a rewrite a killed writer did not finish
        stale.unlink(missing_ok=True)
    topics: dict[str, str] = {}
    files: list[_FileInfo] = []
    for mcap in sorted(path.glob("*.mcap"), key=_file_number):
        scanned = _scan(mcap)
        if scanned is None:
            continue
        file_topics, info = scanned
        for topic, type_ in file_topics.items():
            if topics.setdefault(topic, type_) != type_:
                raise RecordingError(f"{mcap}: topic {topic} has type {type_}, earlier files "
                                     f"{topics[topic]}")
        files.append(info)
    _write_metadata(path, topics, files)
    return BagInfo(topics, files)


def read_messages(path: str | os.PathLike,
                  topics: list[str] | None = None) -> Iterator[tuple[str, object, int]]:
    """(topic, rclpy message, log time ns) of every message in the bag, file by file in the
    order ``metadata.yaml`` lists them and by log time within a file."""
    path = Path(path)
    meta_path = path / "metadata.yaml"
    if not meta_path.is_file():
        raise RecordingError(f"{path}: expected a rosbag2 directory with metadata.yaml")
    info = yaml.safe_load(meta_path.read_text())["rosbag2_bagfile_information"]
    for rel in info["relative_file_paths"]:
        with open(path / rel, "rb") as f:
            reader = make_reader(f)
            for schema, channel, message in reader.iter_messages(topics=topics,
                                                                 log_time_order=True):
                cls = message_class(schema.name)
                yield channel.topic, deserialize_message(message.data, cls), message.log_time
