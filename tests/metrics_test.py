"""Tests for rnnjax/train/metrics.py: records on disk as soon as written, torn lines on resume."""

import json
import logging
import struct
import time

import pytest

from rnnjax.train.metrics import MetricsWriter, read_metrics


def _scalars_on_disk(logdir):
    """``{(tag, step): value}`` of every event file in ``logdir``, read from the TFRecord framing
    (8-byte length, 4-byte CRC, the Event proto, 4-byte CRC) without TensorBoard."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    scalars = {}
    for path in logdir.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_a_written_record_is_on_disk_before_the_writer_closes(tmp_path):
    writer = MetricsWriter(tmp_path)
    try:
        writer.write({"step": 6, "epoch": 1, "train_loss": 0.5, "test_accuracy": 0.25})
        # As a kill -9 would leave it: nothing closed, no background thread waited for.
        assert read_metrics(tmp_path / "metrics.jsonl")[0]["train_loss"] == 0.5
        scalars = _scalars_on_disk(tmp_path / "tensorboard")
        assert scalars == {("train_loss", 6): 0.5, ("test_accuracy", 6): 0.25}
    finally:
        writer.close()


def _write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_run_resumes(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": 6, "epoch": 1}, {"step": 12, "epoch": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 18, "ep')
    with caplog.at_level(logging.WARNING):
        assert read_metrics(path) == records
    assert "torn last line 3" in caplog.text and str(path) in caplog.text
    MetricsWriter(tmp_path, resume_step=12).close()  # a resume rewrites the file without it
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in records)


def test_an_unparseable_line_before_the_last_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, '{"step": 6}', "", '{"step": 12', '{"step": 18}')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 3: expected a JSON record"):
        read_metrics(path)


def test_a_resume_within_the_same_second_keeps_the_earlier_events(tmp_path, monkeypatch):
    """tensorboardX names event files by the second and opens them with "wb": a second writer
    in the same second (a quick in-process rerun) truncated the first one's events."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    first = MetricsWriter(tmp_path)
    first.write({"step": 6, "epoch": 1, "train_loss": 0.5})
    first.close()
    second = MetricsWriter(tmp_path, resume_step=6)
    second.write({"step": 12, "epoch": 2, "train_loss": 0.25})
    second.close()
    scalars = _scalars_on_disk(tmp_path / "tensorboard")
    assert scalars == {("train_loss", 6): 0.5, ("train_loss", 12): 0.25}


def test_tensorboard_shows_a_resumed_run_without_the_abandoned_steps(tmp_path):
    """A run logged steps 6 and 12, was killed before its step-12 checkpoint and resumed from
    step 6: TensorBoard (its own reader) must show the resumed step 12, not both."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    first = MetricsWriter(tmp_path)
    first.write({"step": 6, "epoch": 1, "train_loss": 0.5})
    first.write({"step": 12, "epoch": 2, "train_loss": 0.4})
    first.close()
    resumed = MetricsWriter(tmp_path, resume_step=6)
    resumed.write({"step": 12, "epoch": 2, "train_loss": 0.3})
    resumed.close()
    board = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    shown = [(e.step, e.value) for e in board.Scalars("train_loss")]
    assert shown == [(6, 0.5), (12, pytest.approx(0.3))]
