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
