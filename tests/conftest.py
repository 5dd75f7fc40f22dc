import pytest

from helpers import RedisServer
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
