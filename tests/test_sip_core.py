"""The SIP core on fake time, no sockets: every exchange the phone path relies on, and what bad input gets."""

import hashlib

import pytest
from sipmessage import Message

from voxgate.sip import core, sdp
from voxgate.sip.core import Peer, SipCore
from voxgate.sip.policy import Policy

CALLER = Peer("udp", "192.0.2.10", 5070)
OFFER = ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         "m=audio 30000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n")


def invite(branch="z9hG4bK1", call_id="c1@x", cseq=1, body=OFFER, to_tag=None, extra="", method="INVITE"):
    to = "<sip:agent@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    body = body.encode() if isinstance(body, str) else body
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:agent@192.0.2.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@192.0.2.10>;tag=abc\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:caller@192.0.2.10:5070>\r\n{extra}{ctype}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def sent(actions):
    return [Message.parse(a.data) for a in actions if isinstance(a, core.Send)]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def ringing_call(sip: SipCore, now=0.0):
    acts = sip.receive(invite(), CALLER, now)
    (inc,) = of(acts, core.Incoming)
    return inc.call, acts


def answered_call(sip: SipCore, now=0.0):
    call, _ = ringing_call(sip, now)
    acts = sip.accept(call, ("192.0.2.1", 40000), now)
    (ok,) = sent(acts)
    ack = invite(branch="z9hG4bKack", to_tag=call.local_tag, body=b"", method="ACK")
    assert of(sip.receive(ack, CALLER, now + 0.1), core.Confirmed)
    return call, ok


def test_invite_is_tried_then_answered_with_our_sdp_and_retransmitted_until_ack():
    sip = SipCore(contact={"udp": ("192.0.2.1", 5080)})
    call, acts = ringing_call(sip)
    (trying,) = sent(acts)
    assert trying.code == 100 and "rport=5070;received=192.0.2.10" in trying.headers["Via"]
    assert call.codec.name == "PCMU" and call.offer.dtmf_pt == 101 and call.id.startswith("rtc_")
    (ringing,) = sent(sip.ring(call, 0.0))
    assert ringing.code == 180 and ringing.to_address.parameters["tag"] == call.local_tag
    (ok,) = sent(sip.accept(call, ("192.0.2.1", 40000), 0.0))
    assert ok.code == 200 and ok.headers["Contact"] == "<sip:voxgate@192.0.2.1:5080>"
    answer = sdp.parse(ok.body)
    assert (answer.host, answer.port, [c.name for c in answer.codecs], answer.dtmf_pt) == \
        ("192.0.2.1", 40000, ["PCMU"], 101)
    # no ACK: the 200 again at T1, 2·T1, 4·T1... (capped at T2)
    times = []
    now = 0.0
    while now < 10 and len(times) < 5:
        now = sip.next_deadline()
        if of(sip.tick(now), core.Send):
            times.append(round(now, 2))
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5][:len(times)] and len(times) >= 4
    # the retransmitted INVITE gets the 200 again, never a second call
    again = sip.receive(invite(), CALLER, now)
    assert not of(again, core.Incoming) and sent(again)[0].code == 200
    ack = invite(branch="z9hG4bKack", to_tag=call.local_tag, body=b"", method="ACK")
    assert of(sip.receive(ack, CALLER, now + 0.1), core.Confirmed)
    assert sip.next_deadline() is None or not of(sip.tick(now + 30), core.Send)


def test_a_200_never_acked_ends_the_call_with_a_bye():
    sip = SipCore()
    call, _ = ringing_call(sip)
    sip.accept(call, ("192.0.2.1", 40000), 0.0)
    acts = sip.tick(core.TIMEOUT + 0.1)
    (bye,) = sent(acts)
    assert bye.method == "BYE" and of(acts, core.Ended)[0].reason == "no_ack"


def test_cancel_before_the_answer_is_487_and_the_call_ends():
    sip = SipCore()
    call, _ = ringing_call(sip)
    acts = sip.receive(invite(method="CANCEL", body=b""), CALLER, 1.0)
    codes = sorted(m.code for m in sent(acts))
    assert codes == [200, 487]
    assert of(acts, core.Ended)[0].reason == "cancelled"
    with pytest.raises(ValueError):
        sip.accept(call, ("192.0.2.1", 40000), 1.1)
    # an unknown CANCEL: 481
    assert sent(sip.receive(invite(method="CANCEL", branch="z9hG4bKother", body=b""), CALLER, 2.0))[0].code == 481


def test_bye_ends_an_answered_call_and_a_bye_for_no_dialog_is_481():
    sip = SipCore()
    call, _ = answered_call(sip)
    acts = sip.receive(invite(method="BYE", branch="z9hG4bKb", cseq=2, body=b"", to_tag=call.local_tag), CALLER, 3)
    assert sent(acts)[0].code == 200 and of(acts, core.Ended)[0].reason == "remote_hangup"
    again = sip.receive(invite(method="BYE", branch="z9hG4bKb", cseq=2, body=b"", to_tag=call.local_tag), CALLER, 3.2)
    assert sent(again)[0].code == 200  # a retransmitted BYE: the same answer
    stray = sip.receive(invite(method="BYE", branch="z9hG4bKz", cseq=5, body=b"", to_tag="nosuch"), CALLER, 4)
    assert sent(stray)[0].code == 481 and sip.counters["no_dialog"] == 1


def test_options_says_what_we_take():
    (ok,) = sent(SipCore().receive(invite(method="OPTIONS", body=b""), CALLER, 0))
    assert ok.code == 200 and "INVITE" in ok.headers["Allow"] and "REFER" in ok.headers["Allow"]


def test_hold_and_resume_by_reinvite():
    sip = SipCore()
    call, _ = answered_call(sip)
    held = OFFER.replace("a=sendrecv", "a=sendonly")
    acts = sip.receive(invite(branch="z9hG4bKh", cseq=2, body=held, to_tag=call.local_tag), CALLER, 5)
    (ok,) = sent(acts)
    assert ok.code == 200 and b"a=recvonly" in ok.body and of(acts, core.Updated) and call.on_hold
    sip.receive(invite(branch="z9hG4bKha", cseq=2, body=b"", to_tag=call.local_tag, method="ACK"), CALLER, 5.1)
    acts = sip.receive(invite(branch="z9hG4bKr", cseq=3, to_tag=call.local_tag), CALLER, 6)
    assert b"a=sendrecv" in sent(acts)[0].body and not call.on_hold


def test_refer_then_notify_200_hangs_up_our_leg():
    sip = SipCore()
    call, _ = answered_call(sip)
    with pytest.raises(ValueError):
        sip.refer(call, "http://example.com", 1)
    (refer,) = sent(sip.refer(call, "tel:+15551234567", 1.0))
    assert refer.method == "REFER" and refer.headers["Refer-To"] == "<tel:+15551234567>"
    assert refer.uri.host == "192.0.2.10" and refer.to_address.parameters["tag"] == "abc"
    accepted = (f"SIP/2.0 202 Accepted\r\nVia: {refer.headers['Via']}\r\nFrom: {refer.headers['From']}\r\n"
                f"To: {refer.headers['To']}\r\nCall-ID: {refer.call_id}\r\nCSeq: {refer.headers['CSeq']}\r\n"
                "Content-Length: 0\r\n\r\n").encode()
    assert of(sip.receive(accepted, CALLER, 1.1), core.ReferStatus)[0].status == 202
    frag = b"SIP/2.0 200 OK\r\n"
    notify = invite(method="NOTIFY", branch="z9hG4bKn", cseq=7, body=frag, to_tag=call.local_tag,
                    extra="Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n")
    notify = notify.replace(b"application/sdp", b"message/sipfrag")
    acts = sip.receive(notify, CALLER, 2.0)
    msgs = sent(acts)
    assert msgs[0].code == 200 and msgs[1].method == "BYE"
    assert of(acts, core.ReferStatus)[0].status == 200 and of(acts, core.Ended)[0].reason == "transferred"


def test_dtmf_by_sip_info():
    sip = SipCore()
    call, _ = answered_call(sip)
    info = invite(method="INFO", branch="z9hG4bKi", cseq=4, body=b"Signal=5\r\nDuration=160\r\n",
                  to_tag=call.local_tag).replace(b"application/sdp", b"application/dtmf-relay")
    (key,) = of(sip.receive(info, CALLER, 1), core.Dtmf)
    assert (key.digit, key.duration_ms) == ("5", 160)


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"garbage", b"\x00\xff" * 40, b"INVITE sip:x SIP/2.0\r\n\r\n",
                                  invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
                                  invite().replace(b"Call-ID: c1@x\r\n", b"")])
def test_garbage_is_dropped_and_counted(data):
    sip = SipCore()
    assert sip.receive(data, CALLER, 0) == [] and not sip.calls


def test_answerable_but_broken_requests_get_400_with_the_reason():
    sip = SipCore()
    (bad,) = sent(sip.receive(invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), CALLER, 0))
    assert bad.code == 400 and "CSeq method" in bad.headers["Warning"]
    (short,) = sent(sip.receive(invite().replace(b"Content-Length: ", b"Content-Length: 9"), CALLER, 0))
    assert short.code == 400 and not sip.calls


def test_an_offer_without_a_codec_we_take_is_488_naming_both_sides():
    sip = SipCore()
    opus_only = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 111").replace("a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:111 opus/48000/2\r\n")
    acts = sip.receive(invite(body=opus_only), CALLER, 0)
    final = sent(acts)[-1]
    assert final.code == 488 and "opus" in final.headers["Warning"] and "PCMU" in final.headers["Warning"]
    assert not of(acts, core.Incoming)
    # its retransmission gets the same 488, its ACK nothing
    assert sent(sip.receive(invite(body=opus_only), CALLER, 0.5))[-1].code == 488
    ack = invite(method="ACK", body=b"", to_tag=final.to_address.parameters["tag"])
    assert sip.receive(ack, CALLER, 0.6) == []


def test_allowlist_rate_and_capacity():
    sip = SipCore(Policy(allow=["198.51.100.0/24"], rate=1, burst=2, max_calls=2))
    assert sent(sip.receive(invite(), CALLER, 0))[-1].code == 403
    trunk = Peer("udp", "198.51.100.7", 5060)
    codes = [sent(sip.receive(invite(branch=f"z9hG4bK{i}", call_id=f"c{i}"), trunk, 0))[-1].code for i in range(3)]
    assert codes == [100, 100, 503]  # two calls, then over the burst
    later = sent(sip.receive(invite(branch="z9hG4bK9", call_id="c9"), trunk, 5.0))[-1]
    assert later.code == 486  # the rate allows it by now, but two calls are live


def test_digest_auth():
    sip = SipCore(Policy(user="trunk", password="s3cret"))
    (_, challenge) = sent(sip.receive(invite(), CALLER, 100.0))
    assert challenge.code == 401
    params = dict(challenge.www_authenticate.parameters)

    def md5(s):
        return hashlib.md5(s.encode()).hexdigest()

    uri = "sip:agent@192.0.2.1:5080"
    ha1, ha2 = md5("trunk:voxgate:s3cret"), md5(f"INVITE:{uri}")
    resp = md5(f"{ha1}:{params['nonce']}:00000001:xyz:auth:{ha2}")
    auth = (f'Authorization: Digest username="trunk", realm="voxgate", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{resp}", qop=auth, nc=00000001, cnonce="xyz", algorithm=MD5\r\n')
    acts = sip.receive(invite(branch="z9hG4bK2", cseq=2, extra=auth), CALLER, 101.0)
    assert of(acts, core.Incoming)
    wrong = auth.replace(resp, "0" * 32)
    assert sent(sip.receive(invite(branch="z9hG4bK3", call_id="c3", extra=wrong), CALLER, 102.0))[-1].code == 401
    stale = sent(sip.receive(invite(branch="z9hG4bK4", call_id="c4", extra=auth), CALLER, 100.0 + 301))[-1]
    assert stale.code == 401  # the nonce is older than five minutes


def test_reject_and_hangup_before_the_answer():
    sip = SipCore()
    call, _ = ringing_call(sip)
    with pytest.raises(ValueError):
        sip.reject(call, 200, 0)
    acts = sip.reject(call, 486, 0.0)
    assert sent(acts)[0].code == 486 and of(acts, core.Ended)
    # retransmitted on UDP until its ACK (Timer G)
    assert sent(sip.tick(0.5))[0].code == 486
    sip.receive(invite(method="ACK", body=b"", to_tag=call.local_tag), CALLER, 0.6)
    assert not sip.calls  # the ACK ended it
    sip2 = SipCore()
    call2, _ = ringing_call(sip2)
    assert sent(sip2.hangup(call2, 0))[0].code == 603  # hung up while ringing: declined
