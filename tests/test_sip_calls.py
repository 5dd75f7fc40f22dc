"""Phone calls into `voxgate demo --sip` from real SIP peers (Debian's baresip and SIPp), driven by an app written
against OpenAI's SIP guide: the signed webhook unwrapped by the official `openai` SDK, and the call accepted,
rejected, transferred and hung up through `client.realtime.calls.*` — only the base URL changed."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import free_port, running_demo, wait_for
from voxgate.wire.token import new_secret_line

pytestmark = pytest.mark.skipif(not (shutil.which("sipp") and shutil.which("baresip")),
                                reason="SIPp and baresip not installed (apt-get install sip-tester baresip-core)")
SIPP = Path(__file__).parent / "sipp"
openai = pytest.importorskip("openai")


class App:
    """The app: a webhook endpoint that verifies each `realtime.call.incoming` with the SDK and decides by the
    caller's user part (accept…, reject, cancel = let it ring) what to do with the call."""

    def __init__(self, secret: str):
        from aiohttp import web

        self.secret = secret
        self.calls: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self.live_calls: "queue.Queue[tuple[str, str]]" = queue.Queue()  # live.transport.incoming: the same calls
        self.deliveries: list[str] = []  # realtime.call.incoming
        self.live_deliveries: list[str] = []
        self.bad = 0
        self.client = None  # openai.OpenAI, once the demo's URL is known
        self.port = free_port(socket.SOCK_STREAM)
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _hook(self, request):
        from aiohttp import web

        body = await request.read()
        try:
            event = openai.OpenAI(api_key="unused", webhook_secret=self.secret).webhooks.unwrap(body, request.headers)
        except openai.InvalidWebhookSignatureError:
            self.bad += 1
            return web.Response(status=400)
        caller = next(h.value for h in event.data.sip_headers if h.name.lower() == "from")
        user = caller.split("sip:", 1)[1].split("@", 1)[0]
        if event.type == "live.transport.incoming":  # the same call, announced to an app on GPT-Live
            self.live_deliveries.append(request.headers["webhook-id"])
            self.live_calls.put((event.data.session_id, user))
        else:
            self.deliveries.append(request.headers["webhook-id"])
            self.calls.put((event.data.call_id, user))
        return web.Response(status=200)

    def next_call(self, timeout=20.0) -> tuple[str, str]:
        return self.calls.get(timeout=timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def phone():
    """`voxgate demo --sip` with its embedded voice stack, calls announced to the app's webhook."""
    from voxgate.sip import webhook

    secret = webhook.new_secret()
    app = App(secret)
    sip_port = free_port()
    with running_demo("--sip", f"127.0.0.1:{sip_port}", "--sip-webhook-url", f"http://127.0.0.1:{app.port}/hook",
                      "--sip-webhook-secret", secret) as (url, startup):
        base = url.rsplit("/demo", 1)[0]
        app.client = openai.OpenAI(api_key="sk-unused", base_url=base + "/v1", webhook_secret=secret)
        yield {"app": app, "sip": sip_port, "base": base, "startup": startup}
    app.close()


def sipp(scenario: str, port: int, timeout=30) -> subprocess.Popen:
    return subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP / f"{scenario}.xml"), "-s", "agent",
                             "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-nostdin",
                             "-timeout", f"{timeout}s", "-timeout_error", "-trace_err", "-max_recv_loops", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")


def finished(proc: subprocess.Popen, timeout=40) -> None:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, (out[-2000:], err[-2000:])


def describe(phone, call_id) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{phone['base']}/v1/realtime/calls/{call_id}", timeout=5) as r:
        return json.load(r)


def spoken(tmp: Path, text: str, voice: str, rate: int = 8000) -> Path:
    """A question in a voice the agent never uses (espeak-ng's), at the codec's rate (baresip's aufile wants it),
    padded so the call outlives it."""
    raw = tmp / "q.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
    out = tmp / "q8k.wav"
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out), "pad", "0.5", "7"], check=True)
    return out


def baresip_call(tmp: Path, wav: Path, sip_port: int, user="accept", codec="PCMU") -> Path:
    """baresip as a scripted phone: dials the agent, plays ``wav`` as its microphone, records what it hears. It
    offers every codec module it loaded, so ``codec`` picks the module."""
    rec = tmp / "rec"
    rec.mkdir()
    local = free_port()
    (tmp / "config").write_text("\n".join([
        "poll_method epoll", f"sip_listen 127.0.0.1:{local}", f"audio_source aufile,{wav}",
        "audio_player aubridge,nowhere", "audio_alert aubridge,nowhere", "module_path /usr/lib/baresip/modules",
        "module g722.so" if codec == "G722" else "module g711.so", "module aufile.so", "module aubridge.so", "module sndfile.so", "module_app account.so",
        "module_app menu.so", f"snd_path {rec}", ""]))
    (tmp / "accounts").write_text(f"<sip:{user}@127.0.0.1:{local}>;regint=0;answermode=auto;"
                                 f"audio_codecs={'G722/16000/1' if codec == 'G722' else codec}\n")
    run = subprocess.run(["baresip", "-n", "127.0.0.1", "-f", str(tmp), "-t", "12", "-e",
                          f"/dial sip:agent@127.0.0.1:{sip_port}"], capture_output=True, text=True, timeout=40)
    assert "Call established" in run.stdout, run.stdout[-3000:]
    got = list(rec.glob("*-dec.wav"))
    assert got, run.stdout[-2000:]
    return got[0]


def transcribe(path: Path) -> str:
    import wave

    from voxgate.agent.models import moonshine
    from voxgate.audio import Resampler

    with wave.open(str(path)) as w:
        pcm = Resampler(w.getframerate(), 16000)(w.readframes(w.getnframes()))
    audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768
    return moonshine.MoonshineModel.shared().transcribe(moonshine.trim_silence(audio))


@pytest.mark.parametrize("codec,voice", [("PCMU", "en-us+f4"), ("G722", "en-gb+m2")])
def test_baresip_asks_and_the_agent_answers_over_the_phone(phone, tmp_path, codec, voice):
    """A question spoken in espeak-ng's voices over μ-law and G.722: the app accepts the call with the SDK, the
    agent hears the question and the reply baresip records is speech our recognizer makes words of."""
    app = phone["app"]
    wav = spoken(tmp_path, "What is the capital of France?", voice, 16000 if codec == "G722" else 8000)
    done: dict = {}

    def answer():
        call_id, user = app.next_call()
        app.client.realtime.calls.accept(call_id, type="realtime", instructions="Answer in one short sentence.")
        done["call_id"] = call_id
        time.sleep(3)
        done["live"] = describe(phone, call_id)

    t = threading.Thread(target=answer)
    t.start()
    reply = baresip_call(tmp_path, wav, phone["sip"], codec=codec)
    t.join(10)
    live = done["live"]
    assert live["codec"] == codec and live["transport"] == "sip/udp" and live["audio_in_packets"] > 50, live
    # 3 s after the accept the caller is still asking: the agent's line carries silence all the same, a packet
    # every 20 ms (a phone line without media gets hung up by carriers)
    assert live["audio_out_packets"] >= 0.8 * live["audio_in_packets"], live
    heard = transcribe(reply)
    words = heard.lower().replace(".", " ").split()
    assert len(words) >= 3, heard  # a sentence came back, not noise or silence
    print("agent said over the phone:", heard)


def test_a_phone_call_accepted_as_a_gpt_live_session(phone, tmp_path):
    """The same call announced as GPT-Live announces it (``live.transport.incoming``), accepted with the SDK's
    ``client.live.sessions.accept``: the Live face answers the phone; the Realtime announcement of it is not used."""
    app = phone["app"]
    wav = spoken(tmp_path, "What is the capital of France?", "en-us+f4", 8000)
    done: dict = {}

    def answer():
        call_id, _ = app.next_call()  # realtime.call.incoming comes first; this app speaks Live
        session_id = None
        while session_id != call_id:  # (earlier tests' calls were announced to a Live app too, and left)
            session_id, _ = app.live_calls.get(timeout=20)
        # the question goes to the backend (the agent's own model: --delegate's default), whose answer the voice
        # speaks after its acknowledgement
        app.client.live.sessions.accept(session_id, session={
            "type": "live", "model": "gpt-live-1", "instructions": "Answer in one short sentence.",
            "delegation": {"type": "responses", "responses": {"model": "backend", "max_output_tokens": 40}}})
        done["id"] = session_id
        time.sleep(3)
        done["live"] = describe(phone, session_id)

    t = threading.Thread(target=answer)
    t.start()
    reply = baresip_call(tmp_path, wav, phone["sip"])
    t.join(10)
    assert done["live"]["audio_in_packets"] > 50, done
    heard = transcribe(reply)
    assert len(heard.lower().replace(".", " ").split()) >= 3, heard
    print("the Live session said over the phone:", heard)


def test_voxgate_demo_sip_answers_a_phone_by_itself(tmp_path):
    """`voxgate demo --sip` as the README shows it, no app: baresip dials, asks in a flite voice, hears an answer."""
    sip_port = free_port()
    raw = tmp_path / "raw.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "How many days are in a week?", "-o", str(raw)], check=True)
    wav = tmp_path / "q8k.wav"
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav), "pad", "0.5", "7"], check=True)
    with running_demo("--sip", f"127.0.0.1:{sip_port}") as (_, startup):
        assert f"dial sip:agent@127.0.0.1:{sip_port}" in startup, startup
        reply = baresip_call(tmp_path, wav, sip_port)
    heard = transcribe(reply)
    assert len(heard.replace(".", " ").split()) >= 3, heard
    print("agent said over the phone:", heard)


def test_the_app_rejects_a_call_with_its_status(phone):
    app = phone["app"]
    proc = sipp("reject", phone["sip"])
    call_id, user = app.next_call()
    assert user == "reject"
    app.client.realtime.calls.reject(call_id, status_code=486)
    finished(proc)


def accepted(phone, scenario: str) -> tuple[subprocess.Popen, str]:
    """SIPp dials with ``scenario``; the app takes the webhook's call and accepts it with the SDK."""
    proc = sipp(scenario, phone["sip"])
    call_id, _ = phone["app"].next_call()
    phone["app"].client.realtime.calls.accept(call_id, type="realtime")
    return proc, call_id


def test_the_app_hangs_up_an_answered_call(phone):
    app = phone["app"]
    proc, call_id = accepted(phone, "hangup")
    time.sleep(1.0)
    app.client.realtime.calls.hangup(call_id)
    finished(proc)
    wait_for(lambda: _gone(phone, call_id), 5)


def _gone(phone, call_id) -> bool:
    import urllib.error

    try:
        describe(phone, call_id)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def test_the_app_transfers_the_call_by_refer(phone):
    app = phone["app"]
    proc, call_id = accepted(phone, "refer")
    time.sleep(0.5)
    app.client.realtime.calls.refer(call_id, target_uri="tel:+15551234567")
    finished(proc)  # the scenario checked Refer-To, sent NOTIFY 200 and got our BYE
    with pytest.raises(openai.NotFoundError):
        app.client.realtime.calls.refer("rtc_nosuchcall", target_uri="tel:+1555")


def test_cancel_while_ringing_is_487(phone):
    proc = sipp("cancel", phone["sip"])
    call_id, _ = phone["app"].next_call()  # the app lets it ring
    finished(proc)
    with pytest.raises(openai.NotFoundError):
        phone["app"].client.realtime.calls.accept(call_id, type="realtime")


def test_hold_and_resume(phone):
    proc, _ = accepted(phone, "hold")
    finished(proc)


def test_a_retransmitted_invite_is_one_call(phone):
    app = phone["app"]
    before, live_before = len(app.deliveries), len(app.live_deliveries)
    proc, _ = accepted(phone, "retrans")
    finished(proc)
    time.sleep(0.5)
    assert len(app.deliveries) == before + 1 and app.calls.empty()
    assert len(app.live_deliveries) == live_before + 1  # announced once to a Live app too


def test_dtmf_reaches_the_sideband_as_events(phone):
    """SIPp plays the key 1 as RFC 4733 events; the app's sideband WebSocket (?call_id=) gets it as
    `input_audio_buffer.dtmf_event_received`, and the call reports it."""
    import aiohttp

    proc, call_id = accepted(phone, "dtmf")

    async def watch():
        ws_url = phone["base"].replace("http://", "ws://") + f"/v1/realtime?call_id={call_id}"
        async with aiohttp.ClientSession() as s, s.ws_connect(ws_url, headers={"Authorization": "Bearer sk-x"}) as ws:
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "input_audio_buffer.dtmf_event_received":
                    return event
        return None

    event = asyncio.run(asyncio.wait_for(watch(), 15))
    assert event is not None and event["event"] == "1", event
    assert describe(phone, call_id)["dtmf"] == "1"  # one key, though its end packet came three times
    finished(proc)


def test_malformed_sip_gets_the_right_answer_and_nothing_breaks(phone):
    port = phone["sip"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(2)
    for junk in [b"\x00" * 100, b"HELLO\r\n\r\n", b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", bytes(range(256)) * 4]:
        udp.sendto(junk, ("127.0.0.1", port))
    # a request we can answer but that is wrong: 400 with the reason
    bad = (f"INVITE sip:agent@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad\r\n"
           "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: bad1\r\nCSeq: 1 BYE\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    udp.sendto(bad, ("127.0.0.1", port))
    assert udp.recv(4096).startswith(b"SIP/2.0 400")
    # a BYE for a dialog that does not exist: 481
    stray = bad.replace(b"INVITE sip", b"BYE sip").replace(b"CSeq: 1 BYE", b"CSeq: 2 BYE").replace(
        b"<sip:agent@127.0.0.1>", b"<sip:agent@127.0.0.1>;tag=nosuch")
    udp.sendto(stray, ("127.0.0.1", port))
    assert udp.recv(4096).startswith(b"SIP/2.0 481")
    # garbage on TCP: the connection is closed; a fresh one still gets OPTIONS answered
    tcp = socket.create_connection(("127.0.0.1", port), timeout=3)
    tcp.sendall(b"\xff" * 20000)
    assert tcp.recv(100) == b""
    tcp = socket.create_connection(("127.0.0.1", port), timeout=3)
    tcp.sendall(bad.replace(b"INVITE sip", b"OPTIONS sip").replace(b"CSeq: 1 BYE", b"CSeq: 1 OPTIONS")
                .replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
    assert tcp.recv(4096).startswith(b"SIP/2.0 200")


@pytest.mark.parametrize("scenario,options", [
    ("forbidden", ["--sip-allow", "198.51.100.0/24"]),  # a transceiver that takes calls only from a trunk's network
    ("busy", ["--capacity", "0"]),  # a full transceiver: 486 Busy Here (the phone's caller tries elsewhere)
])
def test_a_call_the_transceiver_will_not_take_is_refused_with_its_status(tmp_path, scenario, options):
    port, http, media = free_port(), free_port(socket.SOCK_STREAM), free_port()
    secret = tmp_path / "secret"
    secret.write_text(new_secret_line(1) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "transceiver", "--agent", "echo", "--no-auth",
                             "--secret-file", str(secret),
                             "--http", f"127.0.0.1:{http}", "--media", f"127.0.0.1:{media}",
                             "--sip-listen", f"127.0.0.1:{port}", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert '"transceiver_ready"' in line, line + proc.stderr.read()
        assert json.loads(line)["sip"]["udp"] == f"127.0.0.1:{port}"
        finished(sipp(scenario, port))
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def echo_phone(tmp_path):
    """`voxgate transceiver` with the echo agent taking calls on UDP, TCP and TLS (a self-signed certificate)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (tmp_path / "secret").write_text(new_secret_line(1) + "\n")
    port, tls, http, media = free_port(), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voxgate", "transceiver", "--agent", "echo", "--no-auth",
                             "--secret-file", str(tmp_path / "secret"), "--http", f"127.0.0.1:{http}",
                             "--media", f"127.0.0.1:{media}", "--sip-listen", f"127.0.0.1:{port}",
                             "--sip-tls", f"127.0.0.1:{tls}", "--sip-tls-cert", str(tmp_path / "cert.pem"),
                             "--sip-tls-key", str(tmp_path / "key.pem")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert '"transceiver_ready"' in line, line + proc.stderr.read()
    yield {"sip": port, "tls": tls, "http": http, "cert": tmp_path / "cert.pem"}
    proc.terminate()
    proc.wait(10)


def test_a_call_over_tcp_and_options_over_tls(echo_phone):
    """SIPp places a call over TCP (hold and resume included); a trunk's TLS connection is answered."""
    import ssl

    proc = subprocess.Popen(["sipp", f"127.0.0.1:{echo_phone['sip']}", "-t", "t1", "-sf", str(SIPP / "hold.xml"),
                             "-s", "agent", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(free_port(socket.SOCK_STREAM)),
                             "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    finished(proc)
    ctx = ssl.create_default_context(cafile=str(echo_phone["cert"]))
    ctx.check_hostname = False
    port = echo_phone["tls"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall((f"OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\nFrom: <sips:trunk@127.0.0.1>;tag=t\r\n"
                     "To: <sips:agent@127.0.0.1>\r\nCall-ID: tls1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
                    .encode())
        answer = tls.recv(4096)
    assert answer.startswith(b"SIP/2.0 200") and b"Allow: INVITE" in answer


def test_a_phone_that_sends_no_media_is_hung_up_with_a_reason(tmp_path):
    """A phone that answers and then sends no RTP (gone without a BYE) holds a call, its ports and an agent: after
    --sip-media-timeout the transceiver sends a BYE with `Reason: SIP;cause=408` (SIPp checks the header)."""
    (tmp_path / "secret").write_text(new_secret_line(1) + "\n")
    port, http, media = free_port(), free_port(socket.SOCK_STREAM), free_port()
    tx = subprocess.Popen([sys.executable, "-m", "voxgate", "transceiver", "--agent", "echo", "--no-auth",
                           "--secret-file", str(tmp_path / "secret"), "--http", f"127.0.0.1:{http}",
                           "--media", f"127.0.0.1:{media}", "--sip-listen", f"127.0.0.1:{port}",
                           "--sip-media-timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = tx.stdout.readline()
        assert '"transceiver_ready"' in line, line + tx.stderr.read()
        t0 = time.monotonic()
        finished(sipp("silent", port, timeout=20))
        assert 2 <= time.monotonic() - t0 < 6
    finally:
        tx.terminate()
        tx.wait(10)


def test_keys_both_ways_on_a_live_sideband(phone):
    """A phone that offers telephone-event, accepted as a GPT-Live session: its key reaches the app's sideband as
    transport.dtmf.received; the app's transport.dtmf.send reaches the phone as RFC 4733 events (decoded by the
    same PhoneIn that reads SIPp's), acknowledged transport.dtmf.sent; a key on a call that cannot take them fails."""
    import asyncio
    import socket as so

    from aiortc.rtp import RtpPacket

    from voxgate.sip import message
    from voxgate.sip import sdp as sip_sdp
    from voxgate.sip.media import PhoneIn

    app, port = phone["app"], phone["sip"]
    got: dict = {}

    def answer():
        call_id, _ = app.next_call()
        session_id = None
        while session_id != call_id:
            session_id, _ = app.live_calls.get(timeout=20)
        app.client.live.sessions.accept(session_id, session={"type": "live", "model": "gpt-live-1"})
        got["id"] = session_id

    t = threading.Thread(target=answer)
    t.start()
    sig = so.socket(so.AF_INET, so.SOCK_DGRAM)
    sig.bind(("127.0.0.1", 0))
    sig.settimeout(10)
    rtp = so.socket(so.AF_INET, so.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.settimeout(0.05)
    lport, rport = sig.getsockname()[1], rtp.getsockname()[1]
    offer = ("v=0\r\no=k 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             f"m=audio {rport} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
             "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n").encode()
    frm, to = f"<sip:keys@127.0.0.1:{lport}>;tag={message.tag()}", f"<sip:agent@127.0.0.1:{port}>"
    via = f"SIP/2.0/UDP 127.0.0.1:{lport};branch={message.branch()};rport"
    cid = f"keys-{time.time_ns()}"
    sig.sendto(message.request("INVITE", f"sip:agent@127.0.0.1:{port}", via=via, from_=frm, to=to, call_id=cid,
                               cseq=1, body=offer, content_type="application/sdp",
                               headers={"Contact": f"<sip:keys@127.0.0.1:{lport}>"}), ("127.0.0.1", port))
    ok = None
    while ok is None or ok.code < 200:
        ok = message.parse(sig.recvfrom(4096)[0])
    assert ok.code == 200, ok.code
    t.join(20)
    remote = sip_sdp.parse(ok.body)
    assert remote.dtmf_pt == 101
    sig.sendto(message.request("ACK", f"sip:agent@127.0.0.1:{port}", via=via.replace("branch=", "branch=a"),
                               from_=frm, to=ok.headers["To"], call_id=cid, cseq=1), ("127.0.0.1", port))
    dest = (remote.host, remote.port)
    decoder = PhoneIn(8000, remote.codecs[0], 101)
    heard: list = []

    def pump(seconds: float, key: str | None = None):
        """Send 20 ms of silence at a time (with ``key``'s events first), read what comes back."""
        seq, ts, end = 100, 1000, time.monotonic() + seconds
        if key is not None:
            for n in range(8):
                p = bytes([int(key), 0x80 | 10 if n >= 5 else 10]) + (min(n + 1, 5) * 160).to_bytes(2, "big")
                rtp.sendto(RtpPacket(payload_type=101, marker=int(n == 0), sequence_number=seq, timestamp=ts,
                                     ssrc=7, payload=p).serialize(), dest)
                seq += 1
        while time.monotonic() < end:
            rtp.sendto(RtpPacket(payload_type=0, sequence_number=seq & 0xFFFF, timestamp=ts, ssrc=7,
                                 payload=b"\xff" * 160).serialize(), dest)
            seq, ts = seq + 1, ts + 160
            try:
                data, addr = rtp.recvfrom(2048)
                _, keys = decoder.receive(data, addr, time.monotonic())
                heard.extend(k for k, _ in keys)
            except so.timeout:
                pass

    async def sideband():
        client = openai.AsyncOpenAI(api_key="sk-unused", base_url=phone["base"] + "/v1", max_retries=0)
        events = []
        async with client.live.sideband.connect(session_id=got["id"]) as side:
            async def read():
                while True:
                    events.append(await side.recv())
            reader = asyncio.ensure_future(read())
            await asyncio.to_thread(pump, 1.5, "7")  # the phone presses 7
            await side.send({"type": "transport.dtmf.send", "event_id": "k1", "event": "#"})
            await side.send({"type": "transport.dtmf.send", "event_id": "k2", "event": "x"})
            await asyncio.to_thread(pump, 1.5)
            reader.cancel()
        return events

    events = asyncio.run(sideband())
    sig.sendto(message.request("BYE", f"sip:agent@127.0.0.1:{port}", via=via.replace("branch=", "branch=b"),
                               from_=frm, to=ok.headers["To"], call_id=cid, cseq=2), ("127.0.0.1", port))
    received = [e for e in events if e.type == "transport.dtmf.received"]
    assert received and received[0].event == "7", [e.type for e in events]
    sent = [e for e in events if e.type == "transport.dtmf.sent"]
    assert sent and sent[0].event == "#" and sent[0].client_event_id == "k1"
    bad = [e for e in events if e.type == "error" and e.error.client_event_id == "k2"]
    assert bad and bad[0].error.param == "event"
    assert heard == ["#"], heard
