"""Headless Chromium (Debian's package, driven by Playwright) calls the transceiver through a real relay."""

import time


from helpers import RelayProcess, TransceiverProcess, free_port, launch_chromium, speech_wav

def test_chromium_connects_through_relay_and_hears_the_echo(playwright, secret_file, tmp_path):
    wav = speech_wav(tmp_path / "speech.wav", "Hello from the browser. This is a test of voice over the relay.")
    relay = RelayProcess(free_port(), secret_file, metrics_port=free_port())
    tx = TransceiverProcess(secret_file, relay_port=relay.port)
    browser = launch_chromium(playwright, wav)
    try:
        page = browser.new_page()
        page.goto(tx.url + "/")
        page.evaluate("start({events: [{type: 'ping', n: 1}]})")
        page.wait_for_function("window.voxgate.state === 'connected'", timeout=15000)
        timings = page.evaluate("window.voxgate.timings")
        assert {"answer", "ice_connected", "dtls_connected"} <= set(timings), timings
        best = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            s = page.evaluate("inboundAudio().then(s => s && {packets: s.packetsReceived, level: s.audioLevel || 0,"
                              " energy: s.totalAudioEnergy || 0})")
            if s:
                best = s
                if s["packets"] > 100 and s["energy"] > 0:
                    break
            time.sleep(0.25)
        assert best and best["packets"] > 100, best
        assert best["energy"] > 0, best  # the echoed speech is audible, not silence
        page.wait_for_function("window.voxgate.events.length > 0", timeout=5000)
        assert page.evaluate("window.voxgate.events[0]") == {"type": "echo", "event": {"type": "ping", "n": 1}}
        page.evaluate("hangup()")
        sessions = None
        for _ in range(50):
            sessions = tx.health()["sessions"]
            if sessions == 0:
                break
            time.sleep(0.1)
        assert sessions == 0
        print("chromium setup timings (ms after POST):", timings)
    finally:
        browser.close()
        tx.stop()
        relay.stop()
