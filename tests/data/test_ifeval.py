"""The IFEval data source: each transformation passes the official checker (and the raw answer fails it),
per-row descriptions, held-out types, prompts disjoint from IFEval's."""

from __future__ import annotations

import json

import pytest

from zhyper.data import ifeval_checkers as checkers
from zhyper.data.ifeval import HELDOUT_TYPES, load_ifeval, training_prompts
from zhyper.data.ifeval_transforms import NOT_TRAINABLE, TRANSFORMS, sentences, transform

ANSWER = ("Gardening is the practice of growing plants, usually for food or beauty. It needs sunlight, water, and "
          "good soil. Many people find it relaxing. Beginners should start with easy herbs. Compost helps the soil "
          "stay rich.")
PROMPT = "Explain gardening to someone who has never heard of it."
# the official capital-letters checker also asks langdetect for English, which reads some all-caps text as German
ANSWERS = {"change_case:english_capital": "The water cycle moves water between the oceans, the air and the land. "
                                          "The sun heats the water and it rises as vapour, then it falls as rain."}

# parameters chosen so that the plain answer does NOT follow the instruction: the twin of each check
CASES = {
    "change_case:english_lowercase": {},
    "change_case:english_capital": {},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "at least"},
    "punctuation:no_comma": {},
    "startend:quotation": {},
    "startend:end_checker": {"end_phrase": "Any other questions?"},
    "detectable_format:title": {},
    "detectable_format:json_format": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:multiple_sections": {"section_spliter": "SECTION", "num_sections": 2},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "length_constraints:number_sentences": {"num_sentences": 3, "relation": "less than"},
    "length_constraints:number_words": {"num_words": 10, "relation": "less than"},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "keywords:existence": {"keywords": ["resident", "sector"]},
    "keywords:frequency": {"keyword": "soil", "frequency": 4, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["soil", "water"]},
    "combination:two_responses": {},
    "combination:repeat_prompt": {},
}


def test_every_registry_type_is_trainable_or_says_why():
    ids = set(checkers.registry())
    assert ids == set(TRANSFORMS) | set(NOT_TRAINABLE), ids ^ (set(TRANSFORMS) | set(NOT_TRAINABLE))
    assert set(CASES) == set(TRANSFORMS)
    assert all(NOT_TRAINABLE.values())


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_transformation_passes_the_official_checker_and_the_raw_answer_fails(instruction_id):
    kw, answer = CASES[instruction_id], ANSWERS.get(instruction_id, ANSWER)
    assert not checkers.check(instruction_id, kw, answer, PROMPT)  # the twin: the checker can fail
    target = transform(instruction_id, answer, kw, PROMPT)
    assert target is not None
    assert checkers.check(instruction_id, kw, target, PROMPT), target


@pytest.mark.parametrize("instruction_id", ["change_case:english_lowercase", "punctuation:no_comma",
                                            "detectable_format:json_format", "detectable_content:postscript"])
def test_transformation_keeps_the_content(instruction_id):
    target = transform(instruction_id, ANSWER, CASES[instruction_id], PROMPT).lower()
    for fact in ("growing plants", "sunlight", "easy herbs", "compost"):
        assert fact in target


def test_unfaithful_requests_give_none_not_a_made_up_answer():
    assert transform("length_constraints:number_sentences", ANSWER, {"num_sentences": 12, "relation": "at least"},
                     PROMPT) is None
    assert transform("detectable_format:number_bullet_lists", "One sentence only.", {"num_bullets": 4}, PROMPT) is None
    with pytest.raises(ValueError, match="not trainable"):
        transform("language:response_language", ANSWER, {"language": "de"}, PROMPT)
    with pytest.raises(ValueError, match="expected one of"):
        transform("no:such_type", ANSWER, {}, PROMPT)


def test_draws_are_reproducible_and_vary():
    a = checkers.draw("length_constraints:number_words", 1)
    assert a == checkers.draw("length_constraints:number_words", 1)
    texts = {checkers.draw("length_constraints:number_words", s)[0] for s in range(8)}
    assert len(texts) > 1
    assert sentences("Mr. Smith went. Then? Yes!") == ["Mr.", "Smith went.", "Then?", "Yes!"]


def test_sentence_checker_runs_offline_with_the_shipped_punkt_data():
    assert checkers.check("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
                          "Mr. Smith went home.")  # Punkt keeps "Mr." inside the sentence


@pytest.fixture(scope="module")
def suite():
    answers = {p: ANSWER.replace("Gardening", p.split()[-1].rstrip("?.")) for p in training_prompts()}
    return load_ifeval(answers, train_draws=4, heldout_draws=2, per_draw=3)


def test_data_source_rows_pass_their_own_descriptions_checker(suite):
    assert set(suite.unseen_contexts) == set(HELDOUT_TYPES)
    assert len({t.split(":")[0] for t in HELDOUT_TYPES}) >= 3 and len(HELDOUT_TYPES) >= 5
    train = suite.split("train")
    assert set(train["context"]).isdisjoint(HELDOUT_TYPES)
    for row in train.select(range(0, len(train), 7)):
        assert checkers.check(row["context"], json.loads(row["kwargs"]), row["response"], row["prompt"])
        assert suite.score(row["context"], row["response"], row["description"], row["prompt"])
        assert not suite.score(row["context"], row["base_answer"], row["description"], row["prompt"]) or \
            row["context"] in ("length_constraints:number_words", "length_constraints:number_sentences",
                               "keywords:frequency", "keywords:forbidden_words", "change_case:capital_word_frequency")
    val_prompts = set(suite.split("validation")["prompt"])
    assert val_prompts.isdisjoint(set(train["prompt"]))
    assert suite.pass_counts and all(n >= ok for n, ok in suite.pass_counts.values())


def test_sampler_uses_each_rows_own_description(suite):
    from zhyper.data import MixedContextSampler

    rows = suite.split("train")
    sampler = MixedContextSampler(rows, suite.descriptions, n_contexts=4, k=2, seed=0)
    for r, d in sampler.global_batch(3):
        assert d == rows[r]["description"]


def test_training_prompts_are_not_ifeval_prompts(shared_data):
    path = shared_data / "ifeval" / "input_data.jsonl"
    official = {json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()}
    assert len(official) == 541
    ours = set(training_prompts())
    assert len(ours) >= 300
    assert ours.isdisjoint(official)


def test_cached_answers_are_made_once_saved_per_batch_and_read_back(tmp_path, monkeypatch):
    from zhyper.data.ifeval import cached_answers, read_answers

    monkeypatch.setenv("ZHYPER_CACHE", str(tmp_path))
    calls = []

    def make(missing, save):
        calls.append(list(missing))
        for p in missing:  # one save per "batch": an interrupted run keeps what it made
            save({p: f"Answer to {p}. Unfinished tail"})

    got = cached_answers("smollm2", ["a", "b"], make, max_new_tokens=7)
    assert got == {"a": "Answer to a.", "b": "Answer to b."}  # the unfinished sentence is dropped
    assert cached_answers("smollm2", ["b", "c"], make, max_new_tokens=7)["b"] == "Answer to b."
    assert calls == [["a", "b"], ["c"]]
    other = cached_answers("smollm2", ["a"], make, max_new_tokens=8)  # another token limit: another cache
    assert other and calls[-1] == ["a"]
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"prompt": "a", "answer": "x"}\n{"prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"answers.jsonl:2: expected a JSON object with 'prompt' and 'answer'"):
        read_answers(bad)
    bad.write_text('{"prompt": "a", "answer": "x"}\n')
    assert read_answers(bad) == {"a": "x"}


def test_pair_rows_pass_both_checkers_and_never_hold_an_evaluated_pair():
    from zhyper.data.ifeval import EVAL_PAIRS
    from zhyper.training.config import DataConfig

    answers = {p: ANSWER.replace("Gardening", p.split()[-1].rstrip("?.")) for p in training_prompts()}
    plain = load_ifeval(answers, train_draws=2, heldout_draws=1, per_draw=1)
    paired = load_ifeval(answers, train_draws=2, heldout_draws=1, per_draw=1, pairs=24)
    pair_rows = [r for r in paired.split("train") if r["second"]]
    assert len(paired.split("train")) - len(plain.split("train")) == len(pair_rows) >= 12
    evaluated = {frozenset(p) for p in EVAL_PAIRS}
    for row in pair_rows:
        first, second = json.loads(row["kwargs"]), json.loads(row["second_kwargs"])
        assert row["split"] == "train" and {row["context"], row["second"]} <= set(paired.seen_contexts)
        assert checkers.check(row["context"], first, row["response"], row["prompt"])
        assert checkers.check(row["second"], second, row["response"], row["prompt"])
        assert frozenset((row["context"], row["second"])) not in evaluated
    # the twin: the plain answers fail at least one of the two checkers on most pair rows
    both = [checkers.check(r["context"], json.loads(r["kwargs"]), r["base_answer"], r["prompt"])
            and checkers.check(r["second"], json.loads(r["second_kwargs"]), r["base_answer"], r["prompt"])
            for r in pair_rows]
    assert sum(both) < len(pair_rows) / 2
    with pytest.raises(ValueError, match="data.pairs"):
        DataConfig(source="builtin", pairs=3)
