"""The BPE tokenizer of `nibble-train prepare --tokenizer bpe` against an independent Python BPE written here
from the rules in core/data/bpe_tokenizer.h: the same merges, the same token ids, exact round trip."""
import json
import os
import re
import subprocess
from collections import Counter

import numpy as np
import pytest

from test_train_cli import BINARY, ROOT, TINY, losses, run

pytestmark = pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built")

CHUNK = re.compile(rb" ?[A-Za-z]+| ?[0-9]+|[\s\S]")  # bpe_tokenizer.h's pre-tokenization


def corpus_bytes():
    path = os.path.join(ROOT, "data", "kjv.txt")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read(300_000)
    words = ["the", "LORD", "said", "unto", "Moses", "and", "it", "came", "to", "pass", "in", "12", "7"]
    rng = np.random.default_rng(0)
    return " ".join(words[i] for i in rng.integers(0, len(words), 60_000)).encode() + b".\n"


def merge(ids, a, b, new):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_reference(text, vocab):
    words = [(list(w), c) for w, c in Counter(CHUNK.findall(text)).items() if len(w) > 1]
    merges = []
    while 256 + len(merges) < vocab:
        pairs = Counter()
        for ids, c in words:
            for p in zip(ids, ids[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then smallest (left, right)
        if pairs[best] < 2:
            break
        merges.append(best)
        words = [(merge(ids, *best, 255 + len(merges)), c) for ids, c in words]
    return merges


def encode_reference(text, merges):
    rank = {p: i for i, p in enumerate(merges)}
    out, cache = [], {}
    for chunk in CHUNK.findall(text):
        if chunk not in cache:
            ids = list(chunk)
            while len(ids) > 1:
                found = [rank[p] for p in zip(ids, ids[1:]) if p in rank]
                if not found:
                    break
                r = min(found)
                ids = merge(ids, *merges[r], 256 + r)
            cache[chunk] = ids
        out += cache[chunk]
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    text = corpus_bytes()
    (d / "corpus.txt").write_bytes(text)
    r = subprocess.run([BINARY, "prepare", "--input", str(d / "corpus.txt"), "--out", str(d), "--tokenizer", "bpe",
                        "--vocab", "400"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d, text


def read_merges(d):
    lines = [l for l in (d / "bpe_merges.txt").read_text().splitlines() if l and not l.startswith("#")]
    return [tuple(int(v) for v in l.split()) for l in lines]


def test_merges_match_a_reference_trainer(prepared):
    d, text = prepared
    split = len(text) - int(len(text) * 0.02)  # BPE is trained on the training part only
    merges = read_merges(d)
    assert len(merges) == 400 - 256
    assert merges == train_reference(text[:split], 400)


def test_token_ids_match_a_reference_encoder_and_round_trip(prepared):
    d, text = prepared
    merges = read_merges(d)
    split = len(text) - int(len(text) * 0.02)
    train = np.fromfile(d / "train.bin", dtype="<u2").tolist()
    val = np.fromfile(d / "val.bin", dtype="<u2").tolist()
    assert train == encode_reference(text[:split], merges)
    assert val == encode_reference(text[split:], merges)
    table = [bytes([i]) for i in range(256)]
    for a, b in merges:
        table.append(table[a] + table[b])
    assert b"".join(table[i] for i in train + val) == text
    assert len(train) < 0.6 * split  # merges compress the text


@pytest.mark.parametrize("args,message", [
    (["--tokenizer", "wordpiece"], "valid: byte, bpe"),
    (["--tokenizer", "bpe", "--vocab", "100000"], "valid: 257 .. 65536"),
    (["--tokenizer", "bpe", "--vocab", "256"], "valid: 257 .. 65536"),
    (["--tokenizer", "bpe", "--vocab", "0"], "valid: 257 .. 65536"),  # an explicit 0 is not "the default"
    (["--vocab", "300"], "applies to --tokenizer bpe only"),
])
def test_bad_prepare_flags(tmp_path, prepared, args, message):
    d, _ = prepared
    r = subprocess.run([BINARY, "prepare", "--input", str(d / "corpus.txt"), "--out", str(tmp_path)] + args,
                       capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_training_stops_when_no_pair_occurs_twice(tmp_path):
    text = corpus_bytes()[:3000]  # far too little text for 65536 ids
    (tmp_path / "corpus.txt").write_bytes(text)
    r = subprocess.run([BINARY, "prepare", "--input", str(tmp_path / "corpus.txt"), "--out", str(tmp_path),
                        "--tokenizer", "bpe", "--vocab", "65536"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    merges = read_merges(tmp_path)
    split = len(text) - int(len(text) * 0.02)
    assert merges == train_reference(text[:split], 65536)
    vocab = 256 + len(merges)
    assert 256 < vocab < 65536 and f"vocab {vocab})" in r.stdout, r.stdout
    assert json.loads((tmp_path / "meta.json").read_text())["vocab"] == vocab
    ids = np.fromfile(tmp_path / "train.bin", dtype="<u2").tolist()
    assert ids == encode_reference(text[:split], merges) and max(ids) < vocab


def test_training_on_bpe_tokens(prepared, tmp_path):
    d, _ = prepared
    base = ["--config", TINY, "--data.train", str(d / "train.bin"), "--data.val", str(d / "val.bin"),
            "--train.out_dir", str(tmp_path), "--train.threads", "1", "--train.steps", "20"]
    r = run(base + ["--train.sample_tokens", "0"])  # model.vocab 256 < 400: refused before training
    assert r.returncode == 2 and "model.vocab" in r.stderr and "400" in r.stderr, r.stderr
    r = run(base + ["--model.vocab", "400", "--train.sample_tokens", "16"])
    assert r.returncode == 0, r.stderr[-2000:]
    curve = losses(tmp_path)
    assert curve[20] < curve[1] - 0.5, curve
    assert "sample: In the beginning" in r.stdout
