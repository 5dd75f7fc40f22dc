"""What makes Debian's headless Chromium a WebRTC client that the lab and the tests can drive (docs/testing.md)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # offer 127.0.0.1 host candidates
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # plain addresses, not mDNS names; must be the last one
]


def args(wav: str, *extra: str) -> list[str]:
    """The flags, with ``wav`` as the microphone and ``extra`` flags (Chromium honours only the last
    ``--disable-features``, so ours stays last)."""
    return [*ARGS[:-1], f"--use-file-for-fake-audio-capture={wav}", *extra, ARGS[-1]]


def launch(playwright, wav: str, *extra: str, executable: str = CHROMIUM):
    """Chromium through Playwright's sync API, unmuted (inbound audioLevel stays 0 when muted)."""
    return playwright.chromium.launch(executable_path=executable, args=args(wav, *extra),
                                      ignore_default_args=["--mute-audio"])


def longest_stall(samples: list[tuple[float, int]]) -> float:
    """From (time, packets received so far) samples: the longest time the count stood still, the tail included
    (what a listener heard as a gap)."""
    stall, last_t, last_n = 0.0, samples[0][0], samples[0][1]
    for t, n in samples[1:]:
        if n != last_n:
            stall = max(stall, t - last_t)
            last_t, last_n = t, n
    return max(stall, samples[-1][0] - last_t)


def in_namespace(path, exec_args: list[str]) -> str:
    """A script at ``path`` that runs Debian's Chromium in a network namespace (``ip netns exec NAME``): what
    Playwright launches as the browser, so the page's traffic leaves from that namespace."""
    import os

    with open(path, "w") as fh:
        fh.write(f"#!/bin/sh\nexec {' '.join(exec_args)} {CHROMIUM} \"$@\"\n")
    os.chmod(path, 0o755)
    return str(path)


def talk_to_demo(url: str, wav: str, timeout: float = 60.0, *, executable: str = CHROMIUM, extra=()) -> dict:
    """Open a transceiver's ``/demo`` page in headless Chromium with ``wav`` as the microphone (played once), click
    Talk, and wait for the user's transcript, the agent's reply text and audible reply audio; then hang up.
    Returns what the page saw (``window.demo``: transcripts, turns, setup marks, the transport ICE selected), with
    ``ok`` true if all three arrived. ``executable`` and ``extra``: another Chromium (a wrapper that runs it in a
    network namespace) and flags."""
    import time

    from playwright.sync_api import sync_playwright

    ms = int(timeout * 1000)
    with sync_playwright() as p:
        browser = launch(p, f"{wav}%noloop", *extra, executable=executable)
        try:
            page = browser.new_page()
            t0 = time.monotonic()
            base = url.split("?")[0].rstrip("/")
            page.goto((base if base.endswith("/demo") else base + "/demo") + "?raw")
            page.click("#talk")
            page.wait_for_function("window.demo.state === 'connected'", timeout=ms)
            connected = time.monotonic() - t0
            page.wait_for_function("window.demo.userTranscripts.length > 0", timeout=ms)
            page.wait_for_function("window.demo.agentTranscripts.length > 0", timeout=ms)
            page.wait_for_function("(window.demo.audioPackets || 0) > 50 && (window.demo.audioEnergy || 0) > 0",
                                   timeout=ms)
            seen = page.evaluate("({user: window.demo.userTranscripts, agent: window.demo.agentTranscripts, "
                                 "packets: window.demo.audioPackets, energy: window.demo.audioEnergy, "
                                 "turns: window.demo.turns, setup: window.demo.setup, transport: window.demo.transport, candidate: window.demo.candidate})")
            page.click("#talk")  # hang up
            page.wait_for_function("window.demo.state === 'ended'", timeout=10000)
        finally:
            browser.close()
    seen["connected_ms"] = round(connected * 1000, 1)
    seen["ok"] = bool(seen["user"] and seen["agent"] and seen["packets"] > 50)
    return seen


if __name__ == "__main__":  # python -m voxgate.lab.chromium URL WAV: one spoken turn through /demo, as JSON
    import json
    import sys

    result = talk_to_demo(sys.argv[1], sys.argv[2])
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)
