from voxgate.agent.core.text import Chunker


def chunks(tokens, **kw):
    c = Chunker(**kw)
    out = []
    for t in tokens:
        out += c.push(t)
    return out + c.flush()


def test_first_chunk_after_two_complete_words_with_leading_space_tokens():
    toks = ["the", " weather", " today", " is", " mostly", " sunny", " with", " some", " clouds", ".", " there's",
            " a", " breeze", "."]
    assert chunks(toks) == ["the weather", "today is mostly sunny with some clouds.", "there's a breeze."]
    assert chunks(toks, first_words=4) == ["the weather today is", "mostly sunny with some clouds.", "there's a breeze."]


def test_the_second_chunk_is_short_too_so_it_is_ready_before_the_first_has_played():
    toks = ("The moon is about three hundred and eighty four thousand kilometres away from the Earth on average . "
            "It takes light just over one second to get here .").split(" ")
    toks = [t if i == 0 or t == "." else " " + t for i, t in enumerate(toks)]
    out = chunks(toks)
    assert out[:2] == ["The moon", "is about three hundred and eighty four thousand"], out
    assert out[2:] == ["kilometres away from the Earth on average.",
                       "It takes light just over one second to get here."], out


def test_first_clause_ends_the_first_chunk_early():
    assert chunks(["Sure", ",", " I", " can", " help", " with", " that", ".", " Anything", " else", "?"]) == \
        ["Sure,", "I can help with that.", "Anything else?"]


def test_later_commas_cut_only_long_sentences():
    toks = "Hi. Sure. The weather is sunny, warm and bright today. A".split(" ")
    toks = [t if i == 0 else " " + t for i, t in enumerate(toks)]
    assert chunks(toks) == ["Hi.", "Sure.", "The weather is sunny, warm and bright today.", "A"]


def test_numbers_and_decimals_do_not_cut():
    toks = ["The", " moon", " is", " 384,400", " km", " or", " 2.5", " light", " seconds", " away", "."]
    assert chunks(toks, first_words=20) == ["The moon is 384,400 km or 2.5 light seconds away."]


def test_digits_count_as_the_words_they_are_spoken_as():
    toks = ["The", " moon", " is", " 140,875,776", " miles", " away", " from", " us", "."]
    assert chunks(toks) == ["The moon", "is 140,875,776", "miles away from us."]
