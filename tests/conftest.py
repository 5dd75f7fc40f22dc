import base64
import os

import pytest

from helpers import RedisServer
from voxgate.wire.token import Keyring


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("3:" + base64.b64encode(os.urandom(24)).decode() + "\n")
    return path


@pytest.fixture
def keyring(secret_file):
    return Keyring.parse(secret_file.read_text())


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()
