"""Prompt templates and the one tokenization of prompts and responses shared by training and decoding.

The response to a prompt is the quoted target title followed by EOS. Its tokens are computed by
tokenizing `response_header + response` and dropping the header's tokens, so that the tokens the
model is trained on, the tokens in the item trie and the tokens decoding produces are the same
sequence (no BPE merge across the prompt/response boundary, no stray leading-space token).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .errors import ConfigError, DataError
from .semantic_ids import code_tokens, item_codes, load_index

# Per-domain wording of the paper's Alpaca-style prompt: (plural noun, singular noun, verb).
DOMAINS: dict[str, tuple[str, str, str]] = {
    "office": ("office products", "office product", "used"),
    "clothing": ("clothing products", "clothing product", "bought"),
    "toy": ("toys", "toy", "played with"),
    "book": ("books", "book", "read"),
    "movie": ("movies", "movie", "watched"),
    "item": ("items", "item", "interacted with"),
}

_ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nGiven a list of {plural} the user has {verb} before, please recommend a new {singular} "
    "that the user likes to the user.\n\n"
    "### Input:\nThe user has {verb} the following {plural} before: {history}\n\n"
    "### Response:\n"
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with a `{history}` slot; `text` ends with `response_header`, after which the title follows."""

    text: str
    response_header: str
    item_format: str = '"{title}"'
    separator: str = ", "
    max_history: int = 10
    name: str = "custom"

    def __post_init__(self) -> None:
        if "{history}" not in self.text:
            raise ConfigError(f"prompt template {self.name!r} has no {{history}} slot. "
                              "Fix: put {history} where the user's past items should appear.")
        if not self.text.endswith(self.response_header) or not self.response_header:
            raise ConfigError(f"prompt template {self.name!r} must end with its non-empty response header "
                              f"{self.response_header!r}. Fix: end the text with the line after which the "
                              "recommended title is written.")
        if "{title}" not in self.item_format:
            raise ConfigError("item_format needs a {title} slot.")
        if self.max_history < 1:
            raise ConfigError(f"max_history must be at least 1, got {self.max_history}.")

    def render(self, history_texts: Sequence[str]) -> str:
        """The prompt text for a history of item texts (oldest first), keeping the most recent `max_history`."""
        recent = list(history_texts)[-self.max_history:]
        history = self.separator.join(self.item_format.format(title=t) for t in recent)
        return self.text.replace("{history}", history)

    def response(self, title: str) -> str:
        """The text the model writes for an item: its formatted title (EOS is added as a token)."""
        return self.item_format.format(title=title)


def alpaca_template(domain: str = "item", max_history: int = 10) -> PromptTemplate:
    """The paper's Alpaca-style prompt with wording for `domain` (one of DOMAINS)."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown prompt domain {domain!r}. Fix: use one of {', '.join(DOMAINS)}.")
    plural, singular, verb = DOMAINS[domain]
    text = _ALPACA.format(plural=plural, singular=singular, verb=verb, history="{history}")
    return PromptTemplate(text=text, response_header="### Response:\n", max_history=max_history,
                          name=f"alpaca-{domain}")


def compact_template(max_history: int = 10) -> PromptTemplate:
    """A short prompt for small models: the history titles one per line, then the answer line."""
    return PromptTemplate(text="{history}\nNext:\n", response_header="\nNext:\n", separator="\n",
                          max_history=max_history, name="compact")


def get_template(spec: str | dict[str, Any] | PromptTemplate = "alpaca", *, domain: str = "item",
                 max_history: int = 10) -> PromptTemplate:
    """Resolve a template by name ('alpaca', 'compact') or from a dict of PromptTemplate fields."""
    if isinstance(spec, PromptTemplate):
        return replace(spec, max_history=max_history)
    if isinstance(spec, dict):
        fields = {"max_history": max_history, **spec}
        if "text" not in fields:
            raise ConfigError("a custom prompt template needs `text` (with {history}) and `response_header`.")
        fields.setdefault("response_header", fields["text"].rsplit("\n", 1)[-1] or "\n")
        return PromptTemplate(**fields)
    if spec == "alpaca":
        return alpaca_template(domain, max_history)
    if spec == "compact":
        return compact_template(max_history)
    raise ConfigError(f"unknown prompt template {spec!r}. Fix: use 'alpaca', 'compact' or a dict with text.")


ITEM_KINDS = ("title", "semantic_id")  # what the model writes for an item
HISTORY_KINDS = ("titles", "codes", "both")  # what each past item shows in the prompt


@dataclass(frozen=True)
class ItemTexts:
    """What the model reads for each past item and writes for each target (item id -> text), the template that
    places them, and the tokens the tokenizer must hold whole (the code tokens of semantic IDs)."""

    history: Mapping[str, str]
    response: Mapping[str, str]
    template: PromptTemplate
    added_tokens: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def titles(cls, items: Mapping[str, str], template: PromptTemplate) -> "ItemTexts":
        """Items shown and written as their titles (item id -> title), in `template`'s item_format."""
        return cls(items, items, template)

    def prompt_ids(self, tokenizer: Any, history: Sequence[str]) -> list[int]:
        """Prompt token ids for a history of item ids (see encode_prompt)."""
        return encode_prompt(tokenizer, self.template, [self.history[i] for i in history])

    def response_ids(self, tokenizer: Any, item_ids: Sequence[str]) -> list[list[int]]:
        """Each item's response token ids, ending with EOS (see encode_responses)."""
        return encode_responses(tokenizer, self.template, [self.response[i] for i in item_ids])

    def text(self, history: Sequence[str], target: str) -> str:
        """The whole text of a training row: its prompt, then the target's response."""
        return self.template.render([self.history[i] for i in history]) + self.template.response(self.response[target])


def item_texts(dataset: Any, template: PromptTemplate, item_kind: str = "title", history: str | None = None
               ) -> ItemTexts:
    """How the model sees `dataset`'s items: `item_kind` is what it writes (the title in the template's item_format, or
    the semantic ID as code tokens, "<a_3><b_0><c_7><d_0>", from DATASET_DIR/semantic_ids.json); `history` what each
    past item shows ("titles", "codes" or "both": the title then the codes; default: the same kind as `item_kind`)."""
    check_item_kinds(item_kind, history)
    history = history or ("titles" if item_kind == "title" else "codes")
    if item_kind == "title" and history == "titles":
        return ItemTexts.titles(dataset.items, template)
    index = load_index(dataset)
    codes = item_codes(index)
    titles = {i: template.response(t) for i, t in dataset.items.items()}  # formatted here: codes take no quotes
    shown = {"titles": titles, "codes": codes, "both": {i: f"{titles[i]} {codes[i]}" for i in titles}}[history]
    return ItemTexts(shown, codes if item_kind == "semantic_id" else titles, replace(template, item_format="{title}"),
                     tuple(code_tokens(index)))


def check_item_kinds(item_kind: str, history: str | None) -> None:
    """ConfigError naming the key for an unknown `item_kind` or `history` value."""
    if item_kind not in ITEM_KINDS:
        raise ConfigError(f"item_kind={item_kind!r} is unknown. Fix: use one of {', '.join(ITEM_KINDS)}.")
    if history is not None and history not in HISTORY_KINDS:
        raise ConfigError(f"history={history!r} is unknown. Fix: use one of {', '.join(HISTORY_KINDS)} (or leave it "
                          "unset: the history shows what the model writes).")


def encode_prompt(tokenizer: Any, template: PromptTemplate, history_texts: Sequence[str]) -> list[int]:
    """Token ids of the prompt of a history's item texts (with the tokenizer's usual special tokens, e.g. BOS)."""
    if not history_texts:
        raise DataError("a history is empty: a prompt needs at least one past item.",
                        fix="drop rows without history when preparing the dataset")
    return list(tokenizer(template.render(history_texts), add_special_tokens=True)["input_ids"])


def encode_responses(tokenizer: Any, template: PromptTemplate, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each item text's response (a title, or semantic-ID codes) exactly as they follow the prompt,
    ending with EOS."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no EOS token. Fix: set tokenizer.eos_token before training.")
    header = template.response_header
    header_ids = list(tokenizer(header, add_special_tokens=False)["input_ids"])
    whole = [header + template.response(t) for t in texts]
    encoded = tokenizer(whole, add_special_tokens=False)["input_ids"] if whole else []
    out: list[list[int]] = []
    n = len(header_ids)
    for title, ids in zip(texts, encoded):
        ids = list(ids)
        if not title.strip():
            raise DataError(f"the title {title!r} is empty.", fix="give every catalog item a non-empty title")
        if ids[:n] != header_ids:
            raise ConfigError(f"the response header {header!r} merges with the title {title!r} into other "
                              "tokens, so training and decoding would disagree. Fix: end the header with a "
                              "newline (trailing spaces merge with the next word in BPE tokenizers).")
        ids_resp = ids[n:]
        if not ids_resp:
            raise DataError(f"the title {title!r} tokenizes to nothing.", fix="check the catalog's titles")
        out.append(ids_resp + [eos])
    return out


def boundary_merges(tokenizer: Any, texts: Sequence[str], split_ids: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the prompt + response `texts` that tokenize as one text otherwise than their `split_ids`
    (prompt ids + response ids without EOS, as `encode_prompt` and `encode_responses` give them).

    Training and decoding both use the split tokenization, so they agree; but a pretrained model saw the
    whole-text one, so a merge across the prompt/response boundary feeds it unusual token sequences.
    """
    whole = tokenizer(list(texts), add_special_tokens=True)["input_ids"] if texts else []
    return [i for i, (w, s) in enumerate(zip(whole, split_ids)) if list(w) != list(s)]


def encode_response(tokenizer: Any, template: PromptTemplate, text: str) -> list[int]:
    """Token ids of one item text's response (see encode_responses)."""
    return encode_responses(tokenizer, template, [text])[0]
