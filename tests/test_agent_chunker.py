from voxgate.agent.stages import Chunker


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


def test_first_clause_ends_the_first_chunk_early():
    assert chunks(["Sure", ",", " I", " can", " help", " with", " that", ".", " Anything", " else", "?"]) == \
        ["Sure,", "I can help with that.", "Anything else?"]


def test_later_commas_cut_only_long_sentences():
    toks = "Hi. The weather is sunny, warm and bright today. A".split(" ")
    toks = [t if i == 0 else " " + t for i, t in enumerate(toks)]
    assert chunks(toks) == ["Hi.", "The weather is sunny, warm and bright today.", "A"]


def test_numbers_and_decimals_do_not_cut():
    toks = ["The", " moon", " is", " 384,400", " km", " or", " 2.5", " light", " seconds", " away", "."]
    assert chunks(toks, first_words=20) == ["The moon is 384,400 km or 2.5 light seconds away."]
