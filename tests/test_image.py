"""The image, built and run for real: deploy/image/build makes it from Debian's packages with podman, and
deploy/image/smoke runs Redis, a relay and a transceiver as containers and places calls through them (aiortc and
Chromium, a spoken question answered, audio both ways). Runs where podman and mmdebstrap are installed (.ci/run
installs them)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")

needs = pytest.mark.skipif(not (shutil.which("podman") and shutil.which("mmdebstrap") and shutil.which("runc")),
                           reason="podman, mmdebstrap and runc are needed (apt-get install podman mmdebstrap runc)")


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@needs
def test_image_builds_and_carries_a_real_call(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap and rootful podman need root here")
    tag = "localhost/voxgate:test-embedded"
    build = subprocess.run([os.path.join(ROOT, "deploy/image/build"), "--embedded", "--tag", tag],
                           capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    built = last_json(build.stdout)
    assert built["tag"] == tag and built["size_bytes"] > 0
    # non-root, and nothing of the build toolchain in the runtime image
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True,
                                        check=True).stdout)[0]
    assert inspect["Config"]["User"] == "10001:10001"
    probe = subprocess.run(["podman", "--runtime", "runc", "run", "--rm", "--ulimit", "nofile=20000:20000",
                            "--ulimit", "nproc=4096:4096", "--entrypoint", "sh", tag, "-c",
                            "command -v gcc || echo no-gcc; ls /opt/voxgate/lib/python3.11/site-packages | "
                            "grep -c llama_cpp || true"], capture_output=True, text=True, timeout=120)
    assert "no-gcc" in probe.stdout and probe.stdout.strip().endswith("0"), probe.stdout + probe.stderr
    smoke = subprocess.run([os.path.join(ROOT, "deploy/image/smoke"), "--tag", tag, "--python", sys.executable],
                           capture_output=True, text=True, timeout=600)
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr[-4000:]
    result = last_json(smoke.stdout)
    assert result["event"] == "smoke_passed"
    assert result["aiortc"]["ok"] and result["aiortc"]["packets_received"] > 50
    assert any("capital" in h.lower() or "france" in h.lower() for h in result["aiortc"]["heard"])
    assert result["chromium"]["ok"] and result["chromium"]["agent"]
    print(json.dumps({"build": built, "cold_start_ms": result["cold_start_ms"]}))
