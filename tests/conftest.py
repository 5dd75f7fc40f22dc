import shutil

import pytest

from helpers import RedisServer, running_demo
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
    with running_demo() as started:
        yield started
