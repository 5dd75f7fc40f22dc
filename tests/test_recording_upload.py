"""Recordings to S3-compatible storage, against a real S3 API server in another process (moto's server mode, in a
venv of its own): a call made while the store is down keeps its recording on disk and uploads it once the store
answers; the object is the file; retention deletes it here and there."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import TransceiverProcess, free_port
from test_models_api import question_pcm
from test_tracing import _turn

boto3 = pytest.importorskip("boto3")
S3_VENV = Path(__file__).resolve().parent.parent / ".venv-s3-server"
ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _moto(port: int) -> subprocess.Popen:
    exe = S3_VENV / "bin" / "moto_server"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: .ci/run installs moto[server] there (tests/s3-server-constraints.txt)")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def test_a_recording_waits_for_the_store_then_goes_up(tmp_path):
    from voxgate.wire.token import new_secret_line

    secret = tmp_path / "secret"
    secret.write_text(new_secret_line(3) + "\n")
    rec = tmp_path / "rec"
    port = free_port(socket.SOCK_STREAM)
    url = f"http://127.0.0.1:{port}"
    tx = TransceiverProcess(secret, agent="voice", env={**os.environ, **ENV}, extra=(
        "--responder", "scripted", "--record", str(rec), "--record-upload", "s3://calls/rec",
        "--s3-endpoint-url", url, "--drain-timeout", "1"))
    moto = None
    try:
        done = _turn(tx, question_pcm(tmp_path), {})
        assert done["status"] == "completed"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not list(rec.glob("*.json")):
            time.sleep(0.1)
        [side] = rec.glob("*.json")
        wav = side.with_suffix(".wav")
        time.sleep(2)  # the store is down: the upload fails and is retried; the file stays
        assert wav.exists() and "uploaded" not in side.read_text()
        moto = _moto(port)
        s3 = boto3.client("s3", endpoint_url=url, **{"aws_access_key_id": "test", "aws_secret_access_key": "test",
                                                       "region_name": "us-east-1"})
        s3.create_bucket(Bucket="calls")
        deadline = time.monotonic() + 40  # the next retry (backoff doubling from 1 s)
        while time.monotonic() < deadline and "uploaded" not in side.read_text():
            time.sleep(0.2)
        assert f"s3://calls/rec/{wav.name}" in side.read_text()
        body = s3.get_object(Bucket="calls", Key=f"rec/{wav.name}")["Body"].read()
        assert body == wav.read_bytes() and body[:4] == b"RIFF" and len(body) > 24000
        assert b'"conversation"' in s3.get_object(Bucket="calls", Key=f"rec/{side.name}")["Body"].read()
    finally:
        tx.stop()
        if moto is not None:
            moto.kill()
            moto.wait(5)


def test_retention_deletes_a_recording_here_and_in_the_store(tmp_path):
    """Sans network: what prune deletes, and which uploads it asks to delete."""
    import json

    from voxgate.call.recording import Recordings

    r = Recordings(str(tmp_path), retention=60)
    gone = []
    r.expired = gone.append
    for name, age in (("old", 120), ("new", 10)):
        (tmp_path / f"{name}.wav").write_bytes(b"RIFF")
        (tmp_path / f"{name}.json").write_text(json.dumps({"uploaded": f"s3://b/{name}.wav"}))
        for f in (tmp_path / f"{name}.wav", tmp_path / f"{name}.json"):
            os.utime(f, (time.time() - age, time.time() - age))
    r.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "new.wav"]
    assert gone == ["s3://b/old.wav"]
