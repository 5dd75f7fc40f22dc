"""The turn-taking state machine alone."""

from voxgate.agent.core.eou import is_backchannel
from voxgate.agent.core.turns import (EndOfTurn, Hold, IdleTimeout, Interrupt, JudgeInterruption, Release, Resume,
                                 Speculate, SpeechStarted, TurnConfig, TurnTaker, transcript_fits)


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
    tt = TurnTaker(TurnConfig(resume_false_interruption=False))
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
    from voxgate.agent.core.turns import EndOfTurn, Speculate, TurnConfig, TurnTaker

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
                tt.judge(verdict.pop(0) if verdict else "complete")
    return [(t, a) for t, a in log if isinstance(a, EndOfTurn)]


EAGERNESS_AUTO = 600  # after a finished sentence that is not a question


def test_semantic_vad_waits_through_a_pause_in_an_unfinished_sentence():
    # "Set a timer for ... twenty minutes, please": judged unfinished at the pause, the 0.7 s pause does not end it
    ends = _run_semantic("auto", 35, ["open", "complete"])
    assert len(ends) == 1 and ends[0][0] == (30 + 35 + 20) * 20 + EAGERNESS_AUTO  # after the second part
    # the same pause under server_vad (500 ms) cuts the turn in two
    from voxgate.agent.core.turns import EndOfTurn, TurnTaker

    tt = TurnTaker()
    cuts = [a for i, p in enumerate([1.0] * 30 + [0.0] * 35 + [1.0] * 20 + [0.0] * 40)
            for a in tt.frame(p, (i + 1) * 20) if isinstance(a, EndOfTurn)]
    assert len(cuts) == 2


def test_semantic_vad_ends_a_finished_turn_early_and_bounds_the_wait_by_eagerness():
    from voxgate.agent.core.turns import EAGERNESS

    ends = _run_semantic("high", 0, ["complete"])
    assert ends and 0 <= ends[0][0] - 50 * 20 - EAGERNESS["high"][1] < 20  # the first frame at or past it
    ends = _run_semantic("auto", 0, ["question"])  # a question hands the floor over: answered soonest
    assert ends and 0 <= ends[0][0] - 50 * 20 - EAGERNESS["auto"][0] < 20
    for eagerness in ("high", "medium", "low"):  # never judged complete: the longest wait, then the turn ends
        ends = _run_semantic(eagerness, 0, ["open"], tail_frames=500)
        assert ends and ends[0][0] - 50 * 20 == EAGERNESS[eagerness][2], (eagerness, ends)


def test_the_end_of_a_word_is_taken_from_its_loudness_not_the_vads_hangover():
    """webrtcvad calls ~100 ms after the last word speech; with the frames' loudness the silence starts where the
    sound fell under 3 % of the turn's loudest frame, and in noise where it fell to the noise floor."""
    from voxgate.agent.core.turns import TAIL_OF_PEAK

    def end_of(levels, vad):
        tt = TurnTaker()
        for i, (lv, p) in enumerate(zip(levels, vad)):
            for a in tt.frame(p, (i + 1) * 20, lv):
                if isinstance(a, EndOfTurn):
                    return a.audio_end_ms
        return None

    quiet = [5.0] * 10 + [3000.0] * 40 + [40.0] * 5 + [5.0] * 40  # the last 5 "speech" frames: the VAD's hangover
    vad = [0.0] * 10 + [1.0] * 45 + [0.0] * 40
    assert 40.0 < TAIL_OF_PEAK * 3000
    assert end_of(quiet, vad) == 50 * 20  # the last loud frame, not the last frame the VAD called speech
    assert end_of([None] * len(vad), vad) == 55 * 20  # without loudness: where the VAD let go
    noisy = [300.0] * 10 + [3000.0] * 40 + [320.0] * 5 + [300.0] * 40  # noise at 20 dB under the speech
    assert end_of(noisy, vad) == 50 * 20
    # a quiet word well above the floor is speech, however loud the turn began
    soft = [5.0] * 10 + [3000.0] * 20 + [200.0] * 20 + [5.0] * 40
    assert end_of(soft, [0.0] * 10 + [1.0] * 40 + [0.0] * 40) == 50 * 20


def test_semantic_vad_does_not_end_a_turn_before_its_verdict():
    """The decode at the pause may take longer than the shortest wait: the turn ends when the verdict comes."""
    cfg = TurnConfig()
    cfg.update({"type": "semantic_vad"})
    tt = TurnTaker(cfg)
    ends, t = [], 0
    for i, p in enumerate([1.0] * 30 + [0.0] * 40):
        t = (i + 1) * 20
        ends += [t for a in tt.frame(p, t) if isinstance(a, EndOfTurn)]
        if i == 30 + 25:  # the verdict arrives 500 ms into the pause
            tt.judge("question")
    assert ends == [(30 + 27) * 20]  # the frame after the verdict


def test_the_words_say_how_finished_a_turn_sounds():
    from voxgate.agent.core.eou import COMPLETE, OPEN, QUESTION, verdict

    assert verdict("What is the capital of France?") == QUESTION
    assert verdict("what is the capital of france") == QUESTION  # no punctuation (PocketSphinx)
    assert verdict("Set a timer for") == OPEN and verdict("Set a timer for...") == OPEN
    assert verdict("Transfer me to the Spanish agent. Spanish,") == OPEN
    assert verdict("Set a timer for twenty minutes, please.") == QUESTION  # "please" hands the floor over
    assert verdict("Tell me a fun fact about octopuses.") == QUESTION  # ... as a request for words does
    assert verdict("Explain how rainbows form") == QUESTION
    assert verdict("Transfer me to the Spanish agent.") == COMPLETE  # another sentence may follow
    assert verdict("Remind me to call.") == COMPLETE  # ... "my mother tomorrow"
    assert verdict("Please") != QUESTION  # a request opener alone
    assert verdict("What is the weather like?") == QUESTION and verdict("Where are you from?") == QUESTION
    assert verdict("what is the weather like") == OPEN  # no "?" (PocketSphinx): it may go on
    assert verdict("2 to timer 4") == OPEN and verdict("7 times 4.") == COMPLETE  # "for" heard as "4", unfinished
    assert verdict("") == COMPLETE
    for done in ("Thank you.", "Call me.", "Turn the lights on.", "I think so.", "Yes, I will.", "See you then."):
        assert verdict(done) != OPEN, done


def test_speech_over_the_agent_is_held_judged_once_it_lasts_and_a_barge_in_if_words():
    tt = TurnTaker(TurnConfig(prefix_padding_ms=300, min_interruption_ms=400))
    tt.set_responding(True)
    events = feed(tt, "." * 20 + "S" * 25)
    assert [type(a) for _, a in events] == [Hold, JudgeInterruption]
    (t_hold, hold), (t_judge, _) = events
    assert t_hold == 440 and hold.audio_start_ms == 100  # two frames in: silent at once; the start padded
    assert t_judge == 400 + 400  # 400 ms of speech: long enough to be a turn, if it is words
    tt.interruption(True)
    events = feed(tt, "S" + "." * 30, t0=900)
    kinds = [type(a) for _, a in events]
    assert kinds[:2] == [SpeechStarted, Interrupt] and events[0][1] == SpeechStarted(100, held=True)
    tt.set_responding(False)  # the barge-in cancelled the response; the turn goes on as any other
    assert EndOfTurn in kinds


def test_a_long_laugh_judged_a_backchannel_is_held_then_released_or_a_turn_after_max_hold():
    tt = TurnTaker(TurnConfig(min_interruption_ms=400))
    tt.set_responding(True)
    feed(tt, "S" * 22)  # judged at 400 ms
    tt.interruption(False)  # "Ha ha"
    assert [type(a) for _, a in feed(tt, "S" * 5 + "." * 10, t0=440)] == [JudgeInterruption]  # again, at the end
    tt.interruption(False)
    assert [a for _, a in feed(tt, ".", t0=740)] == [Release(True)]
    tt2 = TurnTaker(TurnConfig(min_interruption_ms=400))
    tt2.set_responding(True)
    kinds = []
    for i in range(160):
        for a in tt2.frame(1.0, (i + 1) * 20):
            kinds.append(type(a))
            if type(a) is JudgeInterruption:
                tt2.interruption(False)
    assert kinds[-2:] == [SpeechStarted, Interrupt] and kinds.count(JudgeInterruption) >= 5


def test_a_short_backchannel_is_judged_then_released_and_never_starts_a_turn():
    tt = TurnTaker(TurnConfig(min_interruption_ms=800, false_interruption_ms=160))
    tt.set_responding(True)
    events = feed(tt, "S" * 15 + "." * 8)
    assert [type(a) for _, a in events] == [Hold, JudgeInterruption]
    assert events[1][0] == 300 + 160  # judged 160 ms into the silence
    tt.interruption(False)  # "mm-hm"
    assert [a for _, a in feed(tt, "..", t0=480)] == [Release(True)]
    assert tt.state == TurnTaker.IDLE and tt.held is None
    assert feed(tt, "." * 40, t0=520) == []  # no turn ends: there was none


def test_short_words_over_the_agent_are_a_barge_in_and_the_turn_waits_its_own_silence():
    tt = TurnTaker(TurnConfig(silence_duration_ms=500, min_interruption_ms=800, false_interruption_ms=160))
    tt.set_responding(True)
    feed(tt, "S" * 15 + "." * 8)
    tt.interruption(True)  # "Stop."
    events = feed(tt, "." * 40, t0=460)
    kinds = [type(a) for _, a in events]
    assert kinds[:2] == [SpeechStarted, Interrupt] and events[0][1].held
    tt.set_responding(False)
    end = [(t, a) for t, a in events if type(a) is EndOfTurn]
    assert end and end[0][0] - events[0][0] >= 500 - 20  # the silence counts from the confirmation


def test_speech_resuming_while_judged_drops_the_stale_verdict():
    tt = TurnTaker(TurnConfig(min_interruption_ms=800, false_interruption_ms=160))
    tt.set_responding(True)
    feed(tt, "S" * 10 + "." * 8)
    assert tt._judging
    feed(tt, "SS", t0=360)  # "mm ... wait"
    tt.interruption(False)  # the verdict on "mm" arrives late
    assert feed(tt, "S", t0=400) == []  # stale: still held
    events = [type(a) for _, a in feed(tt, "S" * 30, t0=420)]
    assert events == [JudgeInterruption]  # 800 ms of speech in all: judged on all of it
    tt.interruption(True)
    assert [type(a) for _, a in feed(tt, "S", t0=1020)] == [SpeechStarted, Interrupt]


def test_held_speech_becomes_a_plain_turn_when_the_response_ends_meanwhile():
    tt = TurnTaker(TurnConfig(min_interruption_ms=800))
    tt.set_responding(True)
    feed(tt, "SSSS")
    tt.set_responding(False)  # the client cancelled it
    assert [a for _, a in feed(tt, "S", t0=80)] == [SpeechStarted(0, held=True), Release(False)]


def test_backchannels_and_turns():
    for said in ("", "Mm-hmm.", "mhm", "Yeah.", "Okay.", "Uh-huh.", "Ha ha.", "Hmm.", "Yeah, okay.", "Right.",
                 "I see.", "Oh wow."):
        assert is_backchannel(said), said
    for said in ("Stop.", "Wait.", "No.", "What?", "Yeah, but what about tomorrow?", "Okay stop talking",
                 "Tell me more.", "yes please do that"):
        assert not is_backchannel(said), said
    assert is_backchannel("Hahahahahahahah", 1100) and is_backchannel("For, for, for.", 1100, sure=0.003)
    assert is_backchannel("He dreamed.", 480) and not is_backchannel("He dreamed of the sea.", 1500)
    for short in ("Stop", "Wait", "Why?", "No", "Hold on"):  # a word that takes the floor, however short
        assert not is_backchannel(short, 300), short
