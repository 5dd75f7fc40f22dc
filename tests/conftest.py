import json
import shutil
import subprocess
import sys
import time

import pytest

from helpers import RedisServer, free_port
from voxgate.wire.token import Keyring, new_secret_line


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(new_secret_line(3) + "\n")
    return path


@pytest.fixture
def keyring(secret_file):
    return Keyring.parse(secret_file.read_text())


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright():
    """Playwright's sync API driving Debian's Chromium (its own browser download is unreachable here)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from voxgate.lab.chromium import CHROMIUM

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def demo():
    """`voxgate demo` as a user starts it (its default stack); yields its URL and start-up output."""
    port, media, relay = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "demo", "--port", str(port), "--media-port", str(media),
                             "--relay-port", str(relay)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 180
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith('{"event": "demo_ready"'):
            url = json.loads(line)["url"]
            break
    if url is None:
        proc.kill()
        pytest.fail("demo did not start:\n" + "".join(lines) + proc.stderr.read())
    yield url, "".join(lines)
    proc.send_signal(2)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
