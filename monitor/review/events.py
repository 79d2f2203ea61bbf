"""Read TensorBoard event files into a pandas DataFrame: fast and purge-aware.

Why not a library: tbparse keeps the points of redone steps after a resume (it does not apply
TensorBoard's purge rules) and, like TensorBoard's own ``EventAccumulator``, reads about 80,000
scalars/s here. This reader walks the TFRecord framing itself, decodes each event with the
protobuf classes tensorboardX ships (upb, in C), keeps flat columns, and applies
``EventAccumulator``'s purge rules afterwards with numpy (files of version 2, which tensorboardX
writes: a ``SessionLog.START`` at step S hides every point at step >= S; older files: an
out-of-order step hides its tags' later points), so that what it returns is what the TensorBoard
app shows. ``tests/report/test_events.py`` checks it against
``EventAccumulator``.

Most events are one scalar, which tensorboardX always lays out the same way; those are matched by
one regular expression (in C) and their lengths cross-checked, instead of building the protobuf
objects (441,000 to 588,000 scalars/s in ``benchmarks/``); anything else (a second value, a
tensor, metadata, a session log, a tag of 128 bytes or more) goes through protobuf.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

__all__ = ["read_scalars", "event_files"]

_HEADER = struct.Struct("<Q")
# Event{wall_time=1 (fixed64), step=2 (varint, absent when 0), summary=5 {value=1 {tag=1, simple_value=2 (fixed32)}}}
# with one-byte lengths; _read_file checks that the lengths agree with each other and with the tag.
_ONE_SCALAR = re.compile(rb"\x09(.{8})(?:\x10([\x80-\xff]{0,9}[\x00-\x7f]))?\x2a(.)\x0a(.)\x0a(.)(.*)\x15(.{4})", re.S)
_DOUBLE = struct.Struct("<d").unpack
_FLOAT = struct.Struct("<f").unpack


def event_files(log_dir: str | Path) -> list[Path]:
    """Event files of ``log_dir`` in the order TensorBoard reads them (by name)."""
    folder = Path(log_dir)
    return sorted(p for p in folder.glob("*tfevents*") if p.is_file()) if folder.is_dir() else []


@dataclass
class _Points:
    """Flat columns of every point in reading order, plus the purges to apply afterwards."""

    tag_codes: list[int] = field(default_factory=list)  # index into tag_names
    tag_names: dict[str, int] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    # (number of points read before it, step, tags or None for all): EventAccumulator's purge rules
    purges: list[tuple[int, int, tuple[str, ...] | None]] = field(default_factory=list)
    most_recent_step: int = -1
    file_version: float = 0.0  # from "brain.Event:N"; 2 and later use only SessionLog START purges


def _read_file(path: Path, points: _Points) -> None:
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    data = path.read_bytes()
    pos, size = 0, len(data)
    parse, unpack, one_scalar = Event.FromString, _HEADER.unpack_from, _ONE_SCALAR.fullmatch
    codes, names = points.tag_codes, points.tag_names
    codes_of_bytes: dict[bytes, int] = {}
    steps, values, wall_times = points.steps, points.values, points.wall_times
    start_status = SessionLog.START
    while pos + 12 <= size:
        (length,) = unpack(data, pos)
        start = pos + 12
        pos = start + length + 4
        if pos > size:
            break  # a record cut short by a crash: nothing after it is readable
        match = one_scalar(data, start, start + length) if points.file_version >= 2 else None
        if match is not None:
            wall, step_bytes, summary_len, value_len, tag_len, tag, number = match.groups()
            if len(tag) == tag_len[0] and value_len[0] == tag_len[0] + 7 and summary_len[0] == value_len[0] + 2:
                code = codes_of_bytes.get(tag)
                if code is None:
                    text = tag.decode("utf-8")
                    code = names.get(text)
                    if code is None:
                        code = names[text] = len(names)
                    codes_of_bytes[tag] = code
                codes.append(code)
                if step_bytes is None:
                    steps.append(0)
                elif len(step_bytes) == 1:
                    steps.append(step_bytes[0])
                elif len(step_bytes) == 2:
                    steps.append((step_bytes[0] & 0x7F) | step_bytes[1] << 7)
                elif len(step_bytes) == 3:
                    steps.append((step_bytes[0] & 0x7F) | (step_bytes[1] & 0x7F) << 7 | step_bytes[2] << 14)
                else:
                    steps.append(_varint(step_bytes))
                values.append(_FLOAT(number)[0])
                wall_times.append(_DOUBLE(wall)[0])
                continue
        event = parse(data[start : start + length])
        step = event.step
        summary_values = event.summary.value
        if summary_values:
            if points.file_version < 2:  # old files: an out-of-order step hides its tags' later points
                if step < points.most_recent_step:
                    points.purges.append((len(steps), step, tuple(v.tag for v in summary_values)))
                else:
                    points.most_recent_step = step
            wall_time = event.wall_time
            for value in summary_values:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and value.tensor.float_val:
                    number = value.tensor.float_val[0]
                else:
                    continue
                tag = value.tag
                code = names.get(tag)
                if code is None:
                    code = names[tag] = len(names)
                codes.append(code)
                steps.append(step)
                values.append(number)
                wall_times.append(wall_time)
        elif event.file_version:
            points.file_version = float(event.file_version.split(":")[-1])
        elif points.file_version >= 2 and event.session_log.status == start_status:
            # A resumed writer's purge_step: every point at and after it is hidden.
            points.purges.append((len(steps), step, None))


def _varint(data: bytes) -> int:
    """A protobuf int64 varint (10 bytes when negative)."""
    number = 0
    for i, byte in enumerate(data):
        number |= (byte & 0x7F) << (7 * i)
    return number - (1 << 64) if number >= 1 << 63 else number


def read_scalars(log_dir: str | Path) -> pandas.DataFrame:
    """All scalars under ``log_dir`` as a tidy DataFrame: ``tag`` (categorical), ``step, value, wall_time``.

    Points later hidden by TensorBoard (redone after a resume, or written again out of order) are
    left out, exactly as the TensorBoard app leaves them out.

    Examples:
        .. code-block:: python

            df = read_scalars("reports/mlp/tb")
            df[df.tag == "val/loss"]                              # step, value per validation
            df.pivot(index="step", columns="tag", values="value")   # wide format
    """
    import numpy
    import pandas

    points = _Points()
    for path in event_files(log_dir):
        _read_file(path, points)
    frame = pandas.DataFrame(
        {
            "tag": pandas.Categorical.from_codes(  # type: ignore[call-overload]  # stubs lack list categories
                numpy.asarray(points.tag_codes, dtype=numpy.int32), categories=list(points.tag_names)
            ),
            "step": numpy.asarray(points.steps, dtype=numpy.int64),
            "value": numpy.asarray(points.values, dtype=numpy.float64),
            "wall_time": numpy.asarray(points.wall_times, dtype=numpy.float64),
        }
    )
    if points.purges:
        keep = numpy.ones(len(frame), dtype=bool)
        steps = frame["step"].to_numpy()
        codes = numpy.asarray(points.tag_codes, dtype=numpy.int32)
        for before, step, tags in points.purges:
            hidden = steps[:before] >= step
            if tags is not None:
                hidden &= numpy.isin(codes[:before], [points.tag_names[t] for t in tags])
            keep[:before] &= ~hidden
        frame = frame[keep].reset_index(drop=True)
    return frame
