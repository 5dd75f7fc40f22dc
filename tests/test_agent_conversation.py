"""The conversation core alone (sans-IO): events and reports in, typed actions out; no audio, no clock, no tasks."""

from voxgate.agent.core.realtime_face import RealtimeFace
from voxgate.agent.core.conversation import (CancelResponse, ClearInput, CommitResponse, ConfigureAudio, Conversation,
                                        Emit, EndInput, SetResponding, StartResponse)
from voxgate.agent.core.turns import transcript_fits

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}

FACE = RealtimeFace()  # the Realtime vocabulary: client events become the conversation's decisions


def conv() -> Conversation:
    c = Conversation(instructions="Be brief.", model="m", asr="a", voice="joe", vad="webrtcvad", responder="r")
    c.start(None)
    return c


def events(actions, etype=None):
    return [a.event.as_dict() for a in actions if type(a) is Emit and (etype is None or a.event.type == etype)]


def of(actions, kind):
    return [a for a in actions if type(a) is kind]


def test_a_bad_session_update_is_refused_with_the_field_and_changes_nothing():
    c = conv()
    out = FACE.client_event(c, {"type": "session.update", "event_id": "e1", "session": {
        "instructions": "Talk like a pirate.", "tools": [WEATHER],
        "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}}}, 0.0)
    [err] = events(out, "error")
    assert err["error"]["param"] == "session.audio.input.turn_detection.threshold" and err["error"]["event_id"] == "e1"
    assert c.instructions == "Be brief." and c.tools == [] and c.turn_cfg.threshold == 0.5
    for bad, param in [({"tools": [{"type": "function", "name": "has space"}]}, "session.tools[0].name"),
                       ({"tool_choice": {"type": "function", "name": "nope"}}, "session.tool_choice.name"),
                       ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
                       ({"max_output_tokens": 0}, "session.max_output_tokens"),
                       ({"bogus": 1}, "session.bogus")]:
        [err] = events(FACE.client_event(c, {"type": "session.update", "session": bad}, 0.0), "error")
        assert err["error"]["param"] == param, (bad, err)
    out = FACE.client_event(c, {"type": "session.update", "session": {
        "tools": [WEATHER], "tool_choice": "required", "output_modalities": ["text"], "model": "gpt-realtime",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "semantic_vad"}},
                  "output": {"voice": "marin"}}}}, 0.0)
    [updated] = events(out, "session.updated")
    s = updated["session"]
    assert s["tools"] == [WEATHER] and s["tool_choice"] == "required" and s["output_modalities"] == ["text"]
    assert any("model" in i for i in s["voxgate"]["ignored"])
    assert s["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "auto",
                                                     "create_response": True, "interrupt_response": True}
    assert of(out, ConfigureAudio)[0].input_format == {"type": "audio/pcmu"}


def test_live_responses_supersede_each_other_out_of_band_ones_do_not():
    c = conv()
    first = c.respond({"turn_end": 0.0})
    assert of(first, SetResponding) == [SetResponding(True)]
    [start1] = of(first, StartResponse)
    second = c.respond({"turn_end": 1.0})
    assert CancelResponse(start1.rid, "superseded") in second
    oob = FACE.client_event(c, {"type": "response.create", "response": {
        "conversation": "none", "output_modalities": ["text"], "metadata": {"k": "v"},
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}}, 2.0)
    [start] = of(oob, StartResponse)
    assert not of(oob, CancelResponse) and not of(oob, SetResponding)
    assert start.config.conversation == "none" and start.config.metadata == {"k": "v"}
    assert start.messages == [{"role": "user", "content": "hi"}]
    assert c.live != start.rid
    # an out-of-band item never enters the conversation
    assert c.item_done(start.config, {"id": "x", "type": "message", "role": "assistant", "content": []}) == []
    assert c.find("x") is None
    # response.cancel names one; an unknown id is an error
    assert FACE.client_event(c, {"type": "response.cancel", "response_id": start.rid}, 3.0) == \
        [CancelResponse(start.rid, "client_cancelled")]
    [err] = events(FACE.client_event(c, {"type": "response.cancel", "response_id": "resp_nope"}, 3.0), "error")
    assert err["error"]["code"] == "response_cancel_not_active"


def test_partial_inference_commits_a_fitting_speculation_and_redoes_a_stale_one():
    c = conv()
    [spec] = c.speculate("what is the weather")
    assert spec.speculative and c.spec == spec.rid and c.speculate("more") == []
    out = c.end_of_turn("what is the weather", True, {"turn_end": 5.0}, transcript_fits)
    assert of(out, CommitResponse)[0].rid == spec.rid and c.live == spec.rid and SetResponding(True) in out
    c.response_done(spec.rid, "completed", plays=False)
    [spec2] = c.speculate("what is the")
    out = c.end_of_turn("what is the time in Oslo", True, {"turn_end": 6.0}, transcript_fits)
    assert CancelResponse(spec2.rid, "discarded") in out and of(out, StartResponse) and not of(out, CommitResponse)
    # a turn that wants no response throws the speculation away
    [spec3] = c.speculate("hello")
    assert c.end_of_turn("hello", False, {}, transcript_fits) == [CancelResponse(spec3.rid, "discarded")]


def test_tool_calls_and_their_results_become_the_next_responses_context():
    c = conv()
    [start] = of(c.respond({}), StartResponse)
    call = {"id": "item_fc", "object": "realtime.item", "type": "function_call", "status": "completed",
            "name": "get_weather", "call_id": "call_1", "arguments": '{"location": "Oslo"}'}
    assert events(c.item_added(start.config, call), "conversation.item.added")
    assert events(c.item_done(start.config, call), "conversation.item.done")
    assert c.response_done(start.rid, "completed", plays=False) == [SetResponding(False)]
    out = FACE.client_event(c, {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": '{"sky": "clear"}'}}, 0.0)
    assert [e["type"] for e in events(out)] == ["conversation.item.added", "conversation.item.done"]
    [nxt] = of(FACE.client_event(c, {"type": "response.create"}, 1.0), StartResponse)
    assert nxt.messages == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'}]
    [err] = events(FACE.client_event(c, {"type": "conversation.item.create", "item": {"type": "function_call_output"}}, 0.0))
    assert err["error"]["param"] == "item.call_id"


def test_truncate_follows_the_api():
    c = conv()
    [start] = of(c.respond({}), StartResponse)
    item = {"id": "item_a", "object": "realtime.item", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_audio", "transcript": "one two three four"}]}
    c.item_done(start.config, item, audio_ms=2000)
    FACE.client_event(c, {"type": "conversation.item.create", "item": {
        "id": "item_u", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}, 0.0)
    for bad, code_param in [({"item_id": "item_u", "audio_end_ms": 10}, "item_id"),
                            ({"item_id": "item_a", "audio_end_ms": 5000}, "audio_end_ms"),
                            ({"item_id": "item_a", "audio_end_ms": -1}, "audio_end_ms"),
                            ({"item_id": "item_zz", "audio_end_ms": 1}, "item_id")]:
        [err] = events(FACE.client_event(c, {"type": "conversation.item.truncate", **bad}, 0.0))
        assert err["type"] == "error" and err["error"]["param"] == code_param, bad
    [ev] = events(FACE.client_event(c, {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
                                  "audio_end_ms": 1000}, 0.0))
    assert ev["type"] == "conversation.item.truncated" and ev["audio_end_ms"] == 1000
    assert c.find("item_a")["content"][0]["transcript"] == "one two"


def test_barge_in_playback_and_the_input_buffer():
    c = conv()
    [start] = of(c.respond({}), StartResponse)
    rid, out = c.barge_in()
    assert rid == start.rid and CancelResponse(rid, "turn_detected") in out and SetResponding(False) in out
    c.response_done(rid, "cancelled", plays=False)
    [start2] = of(c.respond({}), StartResponse)
    assert c.response_done(start2.rid, "completed", plays=True) == []  # still speaking: barge-in stays armed
    assert c.playing == start2.rid
    rid, out = c.barge_in()  # over playback: nothing to cancel, the shell clears the output
    assert rid == start2.rid and not of(out, CancelResponse) and c.playing is None
    [start3] = of(c.respond({}), StartResponse)
    c.response_done(start3.rid, "completed", plays=True)
    out = c.drained(start3.rid)
    assert SetResponding(False) in out and events(out)[0] == {"type": "output_audio_buffer.stopped",
                                                              "response_id": start3.rid}
    # the input buffer: commit needs audio; clear drops it (and any speculation)
    [err] = events(FACE.client_event(c, {"type": "input_audio_buffer.commit"}, 0.0))
    assert err["error"]["code"] == "input_audio_buffer_commit_empty"
    c.input_open = True
    assert FACE.client_event(c, {"type": "input_audio_buffer.commit"}, 0.0) == [EndInput(True)]
    [spec] = c.speculate("hi")
    out = FACE.client_event(c, {"type": "input_audio_buffer.clear"}, 0.0)
    assert of(out, ClearInput) and CancelResponse(spec.rid, "discarded") in out


def test_a_transcription_session_never_responds():
    c = conv()
    FACE.client_event(c, {"type": "session.update", "session": {"type": "transcription"}}, 0.0)
    assert c.speculate("hello") == []
    assert c.end_of_turn("hello", True, {}, transcript_fits) == []
    [err] = events(FACE.client_event(c, {"type": "response.create"}, 0.0))
    assert err["type"] == "error"


def test_the_sessions_language_reaches_the_recognizer_and_the_reply_or_is_said_plainly():
    """audio.input.transcription's language and prompt go to the recognizer (ConfigureRecognizer); the reply is
    asked in that language when the voice speaks it; an English-only recognizer or voice is said in
    session.updated's voxgate.ignored, not pretended; a language that is not a code is a 400-style error."""
    from voxgate.agent.core.conversation import ConfigureRecognizer
    from voxgate.agent.core.languages import Languages, with_language

    update = {"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "model": "whisper-1", "language": "fr", "prompt": "Paris, Lyon"}}}}}
    c = conv()  # the embedded stack: English recognizer, English voice
    out = FACE.client_event(c, update, 0.0)
    assert of(out, ConfigureRecognizer) == [ConfigureRecognizer("fr", "Paris, Lyon")]
    [updated] = events(out, "session.updated")
    notes = " ".join(updated["session"]["voxgate"]["ignored"])
    assert "hears English only" in notes and "replies are in English, not French" in notes, notes
    assert updated["session"]["audio"]["input"]["transcription"] == {"model": "a", "language": "fr",
                                                                     "prompt": "Paris, Lyon"}
    assert c.response_config().language is None

    open_ = Conversation(instructions="Be brief.", model="m", asr="whisper-base", voice="alloy", vad="webrtcvad",
                         responder="r", languages=Languages(asr=None, voice=None, any_voice=True))
    open_.start({"audio": {"output": {"voice": "af_bella"}}})  # a model server's voice name passes
    out = FACE.client_event(open_, update, 0.0)
    [updated] = events(out, "session.updated")
    assert "ignored" not in updated["session"]["voxgate"] or not any(
        "language" in n for n in updated["session"]["voxgate"]["ignored"]), updated
    assert open_.response_config().language == "fr" and open_.voice == "af_bella"
    assert with_language("Be brief.", "fr").endswith("always answer in French.")
    assert with_language("Be brief.", "en") == "Be brief."
    out = FACE.client_event(open_, {"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "language": ""}}}}}, 0.0)
    assert of(out, ConfigureRecognizer) == [ConfigureRecognizer(None, "Paris, Lyon")]
    assert open_.response_config().language is None

    [err] = events(FACE.client_event(c, {"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "language": "French"}}}}}, 0.0), "error")
    assert err["error"]["param"] == "session.audio.input.transcription.language"
    [err] = events(FACE.client_event(c, {"type": "session.update", "session": {"audio": {"output": {
        "voice": "af_bella"}}}}, 0.0), "error")  # the embedded voice has no such voice
    assert err["error"]["param"] == "session.audio.output.voice"
