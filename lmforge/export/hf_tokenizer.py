"""The tokenizer across the boundary: lmforge's tokenizer.json out as a transformers fast tokenizer,
and a Hugging Face byte-level BPE tokenizer in as an lmforge Tokenizer.

Out: tokenizer.json is lmforge's file unchanged (it is already the `tokenizers` format);
tokenizer_config.json names the special tokens and carries the chat template, so `AutoTokenizer`
loads a `PreTrainedTokenizerFast` (transformers >= 5: `TokenizersBackend`) that encodes text to the
same ids. One documented difference: lmforge encodes special-token strings inside text as plain
bytes, while transformers parses them as the special token (its default, which the chat template
needs); ordinary text, and every conversation whose messages hold no special-token string, encode
identically.

In: lmforge needs its seven special tokens at ids 0..6 (lmforge/tokenizer.py). An imported
tokenizer gets them by a permutation of ids, applied to the embedding rows as well, so the model
computes the same function on the same text:
- "<|endoftext|>" (the document boundary) is the tokenizer's own token of that name if it has one
  (GPT-2, Qwen2, SmolLM), else its end-of-sequence token, renamed (Llama 3's "<|end_of_text|>");
- every other lmforge special token it lacks (pad, mask, chat roles, end of turn) is added, with
  the mean embedding as its row (transformers' `resize_token_embeddings` does the same); the new
  tokens take a little probability mass from the others until fine-tuning teaches them;
- then the tokens at ids 0..6 swap places with those seven, and all other ids stay put.
Only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM) fit lmforge's Tokenizer;
SentencePiece-style ones (Llama 2, Mistral 7B v0.1) are refused with a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.chat.template import CHAT_TEMPLATE_JINJA
from lmforge.errors import LmforgeError
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer

# Special ids in the exported config.json / generation_config.json. No separate BOS: like GPT-2,
# lmforge starts a document after <|endoftext|>, which lm-eval then uses as the prefix token.
EOT, PAD, END = 0, 1, 6
SPECIAL_IDS = {"bos_token_id": EOT, "eos_token_id": EOT, "pad_token_id": PAD}


def tokenizer_config(block_size: int) -> dict:
    """tokenizer_config.json for an lmforge tokenizer: special tokens, chat template, no cleanup."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[EOT],
        "eos_token": SPECIAL_TOKENS[EOT],
        "pad_token": SPECIAL_TOKENS[PAD],
        "mask_token": SPECIAL_TOKENS[2],
        "unk_token": None,
        "additional_special_tokens": SPECIAL_TOKENS[3:],
        "chat_template": CHAT_TEMPLATE_JINJA,
        "model_max_length": block_size,
        # Byte-level BPE decodes exactly; transformers' cleanup would drop spaces before punctuation.
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }


def special_tokens_map() -> dict:
    return {
        "bos_token": SPECIAL_TOKENS[EOT],
        "eos_token": SPECIAL_TOKENS[EOT],
        "pad_token": SPECIAL_TOKENS[PAD],
        "mask_token": SPECIAL_TOKENS[2],
        "additional_special_tokens": SPECIAL_TOKENS[3:],
    }


# ---------------------------------------------------------------- import


@dataclass
class ImportedTokenizer:
    tokenizer: Tokenizer
    text: str  # the tokenizer.json to write
    order: list[int]  # new id -> old id, or -1 for a token that was added
    added: list[str] = field(default_factory=list)  # lmforge special tokens the tokenizer lacked
    renamed: dict[str, str] = field(default_factory=dict)  # old name -> lmforge name

    @property
    def identity(self) -> bool:
        return not self.added and all(i == o for i, o in enumerate(self.order))


def read_tokenizer_json(hf_dir: Path) -> str:
    path = hf_dir / "tokenizer.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        try:  # GPT-2's original vocab.json + merges.txt: transformers converts them to tokenizer.json
            from transformers import AutoTokenizer
        except ImportError:
            raise LmforgeError(
                f"{hf_dir} has vocab.json + merges.txt but no tokenizer.json; converting them "
                "needs transformers (pip install 'lmforge[hf]')"
            ) from None
        try:
            return AutoTokenizer.from_pretrained(str(hf_dir)).backend_tokenizer.to_str()
        except Exception as e:  # noqa: BLE001 -- transformers raises many types for a bad folder
            raise LmforgeError(f"cannot read the tokenizer in {hf_dir}: {str(e).splitlines()[0]}") from None
    raise LmforgeError(f"{hf_dir} has no tokenizer.json (nor vocab.json + merges.txt)")


def _token_name(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def eos_token(hf_dir: Path, token_to_id: dict[str, int], config: dict) -> str | None:
    """The end-of-sequence token's name from tokenizer_config.json, special_tokens_map.json or the
    model's config.json eos_token_id."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = hf_dir / name
        if path.is_file():
            try:
                eos = _token_name(json.loads(path.read_text(encoding="utf-8")).get("eos_token"))
            except ValueError:
                raise LmforgeError(f"{path} is not valid JSON") from None
            if eos in token_to_id:
                return eos
    ids = config.get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids]
    names = {i: t for t, i in token_to_id.items()}
    return next((names[i] for i in ids if i in names), None)


def import_tokenizer(hf_dir: Path, config: dict, model_vocab: int) -> ImportedTokenizer:
    """An lmforge Tokenizer for the Hugging Face folder's tokenizer, with the id permutation applied."""
    text = read_tokenizer_json(hf_dir)
    try:
        spec = json.loads(text)
    except ValueError:
        raise LmforgeError(f"{hf_dir / 'tokenizer.json'} is not valid JSON") from None
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise LmforgeError(
            f"{hf_dir}: the tokenizer is {model.get('type')} with a {decoder.get('type')} decoder; "
            "lmforge imports byte-level BPE tokenizers only (GPT-2, Llama 3, Qwen2, SmolLM), not "
            "SentencePiece-style ones (Llama 2, Mistral 7B v0.1)"
        )
    token_to_id = {**model.get("vocab", {}), **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}
    n_tok = max(token_to_id.values(), default=-1) + 1
    if n_tok > model_vocab:
        raise LmforgeError(
            f"{hf_dir}: the tokenizer has token id {n_tok - 1}, but the model's vocab_size is {model_vocab}"
        )

    renamed: dict[str, str] = {}
    want: list[int] = []  # old id of each lmforge special token; model_vocab + k for the k-th added one
    added: list[str] = []
    for i, name in enumerate(SPECIAL_TOKENS):
        if name in token_to_id:
            want.append(token_to_id[name])
            continue
        eos = eos_token(hf_dir, token_to_id, config) if i == 0 else None
        if eos is not None and eos not in SPECIAL_TOKENS:
            renamed[eos] = name
            want.append(token_to_id[eos])
        else:
            want.append(model_vocab + len(added))
            added.append(name)

    # order[new id] = old id: the tokens, then the added ones right after them (tokenizers numbers
    # tokens contiguously), then the model's padding rows that no token uses (Qwen2 has some).
    order = (
        list(range(n_tok)) + [model_vocab + k for k in range(len(added))] + list(range(n_tok, model_vocab))
    )
    where = {old: new for new, old in enumerate(order)}
    for i, old in enumerate(want):  # move each special token to id i by one swap
        j = where[old]
        order[i], order[j] = order[j], order[i]
        where[order[i]], where[order[j]] = i, j
    if all(i == o for i, o in enumerate(order)) and not added and not renamed:
        return ImportedTokenizer(_load(text), text, order)  # an lmforge tokenizer: kept byte for byte

    new_id = {old: new for new, old in enumerate(order)}

    def rename(token: str) -> str:
        return renamed.get(token, token)

    # Every token goes into the BPE model's vocab (lmforge's trainer does the same with its special
    # tokens): tokenizers ignores the ids of added tokens the model lacks and numbers them after it.
    # Neither merges nor the pre-tokenizer ever produce a special token's whole string, so listing
    # it there changes no encoding.
    vocab = {rename(t): new_id[i] for t, i in token_to_id.items()}
    vocab.update({name: new_id[model_vocab + k] for k, name in enumerate(added)})
    model["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    tokens = [
        {**t, "id": new_id[t["id"]], "content": rename(t["content"])} for t in spec.get("added_tokens", [])
    ]
    tokens += [
        {
            "id": new_id[model_vocab + k],
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for k, name in enumerate(added)
    ]
    spec["added_tokens"] = sorted(tokens, key=lambda t: t["id"])
    spec["post_processor"] = _remap_ids(spec.get("post_processor"), new_id, renamed)
    text = json.dumps(spec, ensure_ascii=False, indent=2)
    order = [o if o < model_vocab else -1 for o in order]
    return ImportedTokenizer(_load(text), text, order, added, renamed)


def _load(text: str) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return Tokenizer(HFTokenizer.from_str(text))
    except LmforgeError:
        raise
    except Exception as e:  # noqa: BLE001 -- tokenizers raises a bare Exception
        raise LmforgeError(f"the imported tokenizer does not load: {str(e).splitlines()[0]}") from None


def _remap_ids(node, new_id: dict[int, int], renamed: dict[str, str]):
    """Post-processors (Llama 3's TemplateProcessing adds <|begin_of_text|>) name special tokens by
    id and string: map the ids and the renamed strings, recursively."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            k = renamed.get(k, k)
            if k == "ids" and isinstance(v, list):
                out[k] = [new_id.get(i, i) for i in v]
            else:
                out[k] = _remap_ids(v, new_id, renamed)
        return out
    if isinstance(node, list):
        return [_remap_ids(v, new_id, renamed) for v in node]
    if isinstance(node, str):
        return renamed.get(node, node)
    return node
