"""nibble's tokenizers (core/data/byte_tokenizer.h, bpe_tokenizer.h) as a `tokenizers` Tokenizer with the same ids.

Both are byte-level: id b < 256 is byte b, and BPE merge i makes id 256 + i from two existing ids. In the
`tokenizers` form every byte is GPT-2's printable stand-in character (transformers' bytes_to_unicode, the
ByteLevel pre-tokenizer and decoder's alphabet), a token's string is its bytes' stand-ins, and merge i is the
pair of its parts' strings. nibble's pre-tokenization (a chunk is an optional space plus a run of ASCII letters,
an optional space plus a run of digits, or any other single byte) becomes a Split on that pattern, isolating each
match, before the byte mapping. `tokenizers`' BPE applies the lowest-ranked merge present, leftmost first, which
is nibble's order (a merge's result only appears in later merges), so the ids agree; the tests check it on
real text against the token files `nibble-train prepare` wrote.
"""
from __future__ import annotations

import json
import os

# nibble's pre-tokenization (bpe_tokenizer.h); [\s\S]: any other single character (bytes of one UTF-8
# character then stay in one piece, which changes nothing: no merge involves a byte >= 0x80).
_CHUNK = r" ?[A-Za-z]+| ?[0-9]+|[\s\S]"


class TokenizerError(ValueError):
    pass


def read_merges(path: str) -> list[tuple[int, int]]:
    """The merges file of `nibble-train prepare --tokenizer bpe` ("#" header, then "left right" per line)."""
    merges = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split()
            nxt = 256 + len(merges)
            if len(fields) != 2 or not all(x.isdigit() and int(x) < nxt for x in fields):
                raise TokenizerError(f"BPE merges file '{path}' line {number}: '{line.rstrip()}' is not two ids below {nxt}")
            merges.append((int(fields[0]), int(fields[1])))
    return merges


def describe_tokens_dir(tokens_dir: str) -> tuple[str, list[tuple[int, int]]]:
    """("byte", []) or ("bpe", merges) for a directory of token files, by its meta.json (as the trainer reads it:
    no meta.json means bytes)."""
    meta_path = os.path.join(tokens_dir, "meta.json")
    if not os.path.isfile(meta_path):
        return "byte", []
    with open(meta_path) as f:
        meta = json.load(f)
    kind = meta.get("tokenizer", "byte")
    if kind == "byte":
        return "byte", []
    if kind != "bpe":
        raise TokenizerError(f"'{meta_path}' names tokenizer '{kind}'; known: byte, bpe")
    merges = read_merges(os.path.join(tokens_dir, meta.get("merges", "bpe_merges.txt")))
    if "vocab" in meta and meta["vocab"] != 256 + len(merges):
        raise TokenizerError(f"'{meta_path}' says vocab {meta['vocab']} but its merges make {256 + len(merges)} ids")
    return "bpe", merges


def build(merges: list[tuple[int, int]]):
    """The `tokenizers.Tokenizer` of nibble's byte tokenizer (no merges) or BPE tokenizer (its merges).

    Raises TokenizerError when two ids stand for the same bytes (two merge orders reaching one string): a
    `tokenizers` vocabulary maps each string to one id, so such a tokenizer has no exact equivalent."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    stand_in = bytes_to_unicode()  # byte value -> its printable character
    strings = [stand_in[b] for b in range(256)]
    for a, b in merges:
        strings.append(strings[a] + strings[b])
    vocab: dict[str, int] = {}
    for i, s in enumerate(strings):
        if s in vocab:
            raise TokenizerError(f"BPE ids {vocab[s]} and {i} both stand for the bytes "
                                 f"{bytes(ord(c) for c in s)!r}; a `tokenizers` vocabulary cannot hold two ids for "
                                 f"one string, so this tokenizer has no exact Hugging Face form")
        vocab[s] = i
    model = models.BPE(vocab=vocab, merges=[(strings[a], strings[b]) for a, b in merges], dropout=None,
                       unk_token=None, fuse_unk=False, byte_fallback=False, ignore_merges=False)
    tok = Tokenizer(model)
    pieces = [pre_tokenizers.Split(Regex(_CHUNK), behavior="isolated")] if merges else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        pieces + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def save(tok, out_dir: str) -> None:
    """tokenizer.json plus transformers' tokenizer_config.json (AutoTokenizer loads the directory)."""
    from transformers import PreTrainedTokenizerFast

    # No special tokens: nibble trains on raw text with none (no BOS/EOS/pad ids exist in its vocabulary).
    PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False).save_pretrained(out_dir)
