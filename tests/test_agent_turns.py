"""The turn-taking state machine alone."""

from voxgate.agent.turns import (EndOfTurn, IdleTimeout, Interrupt, Resume, Speculate, SpeechStarted, TurnConfig,
                                 TurnTaker, transcript_fits)


def feed(tt, pattern, t0=0):
    """pattern: string of 'S' (speech) and '.' (silence), one char per 20 ms frame; returns [(t_ms, action)]."""
    out = []
    for i, ch in enumerate(pattern):
        t = t0 + (i + 1) * 20
        out += [(t, a) for a in tt.frame(1.0 if ch == "S" else 0.0, t)]
    return out


def test_one_turn_with_speculation_then_end():
    tt = TurnTaker(TurnConfig(silence_duration_ms=500, prefix_padding_ms=300, pause_ms=160))
    events = feed(tt, "....." + "S" * 25 + "." * 30)
    kinds = [type(a).__name__ for _, a in events]
    assert kinds == ["SpeechStarted", "Speculate", "EndOfTurn"]
    (t1, started), (t2, spec), (t3, end) = events
    assert started == SpeechStarted(audio_start_ms=0)  # 100 ms of silence before speech, 300 ms padding, floor 0
    assert spec.audio_end_ms == end.audio_end_ms == 600  # the last speech frame ended at 600 ms
    assert t2 - 600 == 160 and t3 - 600 == 500


def test_resumed_speech_voids_the_speculation():
    tt = TurnTaker(TurnConfig(silence_duration_ms=500, pause_ms=160))
    events = [a for _, a in feed(tt, "S" * 10 + "." * 12 + "S" * 10 + "." * 26)]
    assert events == [SpeechStarted(0), Speculate(200), Resume(), Speculate(640), EndOfTurn(640, True)]


def test_short_pause_below_pause_ms_neither_speculates_nor_ends():
    tt = TurnTaker(TurnConfig(silence_duration_ms=500, pause_ms=160))
    events = [type(a).__name__ for _, a in feed(tt, "S" * 10 + "." * 5 + "S" * 10)]
    assert events == ["SpeechStarted"]
    assert tt.state == TurnTaker.SPEAKING


def test_single_noisy_frame_is_not_speech():
    tt = TurnTaker()
    assert feed(tt, ".S.S.S..S.") == []


def test_barge_in_only_while_responding_and_when_enabled():
    tt = TurnTaker(TurnConfig())
    tt.set_responding(True)
    assert [type(a) for _, a in feed(tt, "SSS")] == [SpeechStarted, Interrupt]
    tt2 = TurnTaker(TurnConfig(interrupt_response=False))
    tt2.set_responding(True)
    assert [type(a) for _, a in feed(tt2, "SSS")] == [SpeechStarted]


def test_no_speculation_when_disabled_or_no_auto_response():
    for cfg in (TurnConfig(partial_inference=False), TurnConfig(create_response=False)):
        events = [a for _, a in feed(TurnTaker(cfg), "S" * 10 + "." * 30)]
        assert [type(a) for a in events] == [SpeechStarted, EndOfTurn]
        assert events[1].create_response == cfg.create_response


def test_session_update_semantics():
    cfg = TurnConfig()
    ignored = cfg.update({"type": "server_vad", "silence_duration_ms": 300, "threshold": 0.7,
                          "create_response": False, "bogus": 1})
    assert cfg.silence_duration_ms == 300 and cfg.threshold == 0.7 and not cfg.create_response
    assert cfg.pause_ms < 300
    assert "turn_detection.bogus" in ignored and not cfg.semantic
    assert cfg.update({"type": "semantic_vad", "eagerness": "high"}) == [] and cfg.semantic
    assert cfg.as_dict() == {"type": "semantic_vad", "eagerness": "high", "create_response": False,
                             "interrupt_response": True}
    cfg.update(None)
    assert not cfg.enabled and feed(TurnTaker(cfg), "S" * 20) == []


def test_transcript_fits():
    assert transcript_fits("what's the weather", "What's the weather?")
    assert not transcript_fits("what's the weather", "what's the weather in paris")


def test_idle_timeout_after_the_agent_finished_once_per_silence():
    cfg = TurnConfig()
    assert cfg.update({"type": "server_vad", "idle_timeout_ms": 1000}) == []
    assert cfg.as_dict()["idle_timeout_ms"] == 1000
    tt = TurnTaker(cfg)
    tt.set_responding(True)
    assert feed(tt, "." * 100) == []  # the agent is talking: the user's silence does not count
    tt.set_responding(False)
    events = feed(tt, "." * 49, t0=2000) + feed(tt, "." * 60, t0=2980)
    assert events == [(3000, IdleTimeout(2000, 3000))]  # once, 1 s after the agent finished
    tt.set_responding(True)  # the agent prompts the user
    tt.set_responding(False)
    assert [a for _, a in feed(tt, "." * 50, t0=5000)] == [IdleTimeout(5000, 6000)]  # re-armed by that response
    # speech before the timeout: a turn, no timeout
    tt = TurnTaker(cfg)
    assert [type(a).__name__ for _, a in feed(tt, "." * 40 + "S" * 5 + "." * 30)] == ["SpeechStarted", "Speculate",
                                                                                        "EndOfTurn"]
    assert not [a for _, a in feed(tt, "." * 20) if isinstance(a, IdleTimeout)]
    cfg.update({"type": "server_vad", "idle_timeout_ms": None})
    assert cfg.idle_timeout_ms is None


def _run_semantic(eagerness, pause_frames, verdict, tail_frames=300):
    """Speech, a pause of ``pause_frames`` (judged ``verdict`` at the Speculate), more speech, then silence."""
    from voxgate.agent.turns import EndOfTurn, Speculate, TurnConfig, TurnTaker

    cfg = TurnConfig()
    cfg.update({"type": "semantic_vad", "eagerness": eagerness})
    tt = TurnTaker(cfg)
    t, log = 0, []
    script = [1.0] * 30 + [0.0] * pause_frames + [1.0] * 20 + [0.0] * tail_frames
    for p in script:
        t += 20
        for a in tt.frame(p, t):
            log.append((t, a))
            if isinstance(a, Speculate):
                tt.judge(verdict.pop(0) if verdict else True)
    return [(t, a) for t, a in log if isinstance(a, EndOfTurn)]


EAGERNESS_AUTO = 500


def test_semantic_vad_waits_through_a_pause_in_an_unfinished_sentence():
    # "Set a timer for ... twenty minutes, please": judged unfinished at the pause, the 0.7 s pause does not end it
    ends = _run_semantic("auto", 35, [False, True])
    assert len(ends) == 1 and ends[0][0] == (30 + 35 + 20) * 20 + EAGERNESS_AUTO  # after the second part
    # the same pause under server_vad (500 ms) cuts the turn in two
    from voxgate.agent.turns import EndOfTurn, TurnTaker

    tt = TurnTaker()
    cuts = [a for i, p in enumerate([1.0] * 30 + [0.0] * 35 + [1.0] * 20 + [0.0] * 40)
            for a in tt.frame(p, (i + 1) * 20) if isinstance(a, EndOfTurn)]
    assert len(cuts) == 2


def test_semantic_vad_ends_a_finished_turn_early_and_bounds_the_wait_by_eagerness():
    from voxgate.agent.turns import EAGERNESS

    ends = _run_semantic("high", 0, [True])
    assert ends and 0 <= ends[0][0] - 50 * 20 - EAGERNESS["high"][0] < 20  # the first frame at or past it
    for eagerness in ("high", "medium", "low"):  # never judged complete: the longest wait, then the turn ends
        ends = _run_semantic(eagerness, 0, [False], tail_frames=500)
        assert ends and ends[0][0] - 50 * 20 == EAGERNESS[eagerness][1], (eagerness, ends)
