#!/usr/bin/env python3
"""Tokenizer parity fixtures: a >= 1 MB diverse corpus and the ids HF `tokenizers` gives for it.

Writes test/fixtures/tokenizer/:
  corpus.bin            u32 n_docs, then per doc: u32 n_bytes, bytes (valid UTF-8)
  bytelevel.json        byte-level BPE trained here by HF tokenizers with the Llama 3 regex
  sentencepiece.json    SentencePiece-style BPE (byte_fallback, <0xNN> tokens) trained by HF
  wordpiece.json        BERT-style WordPiece (BertNormalizer, BertPreTokenizer, [CLS] $A [SEP])
                        trained by HF, with a limited alphabet so that [UNK] occurs
  ours.json             byte-level BPE trained by OUR `./tokenize train` (input for case (b));
                        the expected ids for it still come from HF loading that file
  variants.json         the tokenizers under test: a base file plus fields to replace
  expected_<name>.bin   per doc: u8 add_special_tokens, u32 n_ids, u64 fnv(decode bytes),
                        then one u64 FNV-1a hash per block of 64 ids (see fnv_ids)

  expected_minilm.bin   the ids of the real all-MiniLM-L6-v2 tokenizer (written only when
                        `scripts/install_deps.sh --minilm` has put it in $MINILM_DIR)

Everything is seeded, but HF's trainer is not deterministic, so bytelevel.json,
sentencepiece.json and wordpiece.json are only retrained with --retrain (see main). The corpus comes from offline sources only (the Python stdlib's sources and
docstrings, unicodedata, generated numbers / whitespace / scripts / emoji / special-token lookalikes).
"""
import ast
import glob
import json
import os
import random
import struct
import subprocess
import sys
import sysconfig
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "tokenizer")
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
BLOCK = 64
MASK = (1 << 64) - 1


def fnv_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        h = ((h ^ i) * 0x100000001B3) & MASK
    return h


def fnv_bytes(b):
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & MASK
    return h


# ---------------------------------------------------------------- corpus
def assigned(cp):
    return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")


def build_corpus(rng):
    docs = []
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    sources = [open(f, encoding="utf-8", errors="replace").read() for f in files]

    # code: slices of stdlib modules, cut at line starts
    for _ in range(230):
        src = rng.choice(sources)
        lines = src.split("\n")
        a = rng.randrange(max(1, len(lines) - 10))
        docs.append("\n".join(lines[a:a + rng.randint(5, 80)]))
    # prose: docstrings of stdlib modules, functions and classes
    prose = []
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node, clean=False)
                if d and len(d) > 200:
                    prose.append(d)
    prose.sort()
    rng.shuffle(prose)
    docs += prose[:700]
    # numbers and long digit runs
    for _ in range(250):
        parts = []
        for _ in range(rng.randint(5, 40)):
            k = rng.random()
            if k < 0.3:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif k < 0.45:
                parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(10, 80))))
            elif k < 0.6:
                parts.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 9)}f}")
            elif k < 0.7:
                parts.append(f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
            elif k < 0.8:
                parts.append(f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}")
            elif k < 0.9:
                parts.append(f"{rng.random():.3e}")
            else:
                parts.append("".join(rng.choice("0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९①②③¼½²³") for _ in range(rng.randint(1, 12))))
        docs.append(rng.choice([" ", ", ", "\n", "\t", "; "]).join(parts))
    # runs of spaces, tabs, newlines (and Unicode spaces) between words
    spaces = [" ", "  ", "   ", "        ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\n\n\n\n", " \n", "\t \n ",
              "\u00a0", "\u3000", "\u2009", "\u2003", "\u180e", "\u200b", "\u0085", "\u2028", "\u202f", "\x0b", "\x0c"]
    words = [w for w in open("/usr/share/dict/words", encoding="utf-8").read().split("\n") if w] \
        if os.path.exists("/usr/share/dict/words") else ["alpha", "beta", "gamma", "delta"]
    words.sort()
    for _ in range(180):
        out = []
        for _ in range(rng.randint(10, 120)):
            out.append(rng.choice(words) if rng.random() < 0.6 else "")
            out.append("".join(rng.choice(spaces) for _ in range(rng.randint(1, 6))))
        docs.append("".join(out))
    # CJK, kana, Hangul
    cjk_ranges = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x3400, 0x4DBF)]
    for _ in range(160):
        s = []
        for _ in range(rng.randint(20, 300)):
            r = rng.random()
            if r < 0.85:
                a, b = rng.choice(cjk_ranges)
                s.append(chr(rng.randint(a, b)))
            else:
                s.append(rng.choice("。、「」！？（）：；… ,.1234567890ABCxyz\n"))
        docs.append("".join(s))
    # Arabic (with harakat), Hebrew, Devanagari, Thai, Cyrillic, Greek
    scripts = [(0x0621, 0x064A), (0x05D0, 0x05EA), (0x0905, 0x0939), (0x0E01, 0x0E2E), (0x0410, 0x044F), (0x0391, 0x03C9)]
    marks = {0x0621: list(range(0x064B, 0x0653)), 0x05D0: list(range(0x05B0, 0x05BC)),
             0x0905: list(range(0x093E, 0x094D)), 0x0E01: list(range(0x0E31, 0x0E3A))}
    for _ in range(200):
        a, b = rng.choice(scripts)
        ws = []
        for _ in range(rng.randint(5, 60)):
            w = ""
            for _ in range(rng.randint(1, 9)):
                c = rng.randint(a, b)
                if assigned(c):
                    w += chr(c)
                if a in marks and rng.random() < 0.3:
                    w += chr(rng.choice(marks[a]))
            ws.append(w)
        docs.append(rng.choice([" ", " ", "، ", ". ", "\n"]).join(ws))
    # emoji, skin tones, ZWJ sequences, flags, variation selectors
    people = ["\U0001F468", "\U0001F469", "\U0001F467", "\U0001F466", "\U0001F9D1"]
    zwj = "\u200d"
    for _ in range(150):
        s = []
        for _ in range(rng.randint(5, 60)):
            k = rng.random()
            if k < 0.3:
                s.append(zwj.join(rng.choice(people) for _ in range(rng.randint(2, 4))))
            elif k < 0.45:
                s.append(rng.choice(people) + chr(rng.randint(0x1F3FB, 0x1F3FF)))
            elif k < 0.6:
                s.append(chr(0x1F1E6 + rng.randrange(26)) + chr(0x1F1E6 + rng.randrange(26)))
            elif k < 0.7:
                s.append(rng.choice(["\u2764\ufe0f", "\u263a\ufe0f", "\u2708\ufe0f", "#\ufe0f\u20e3", "\U0001F3F3\ufe0f\u200d\U0001F308"]))
            elif k < 0.9:
                s.append(chr(rng.randint(0x1F300, 0x1F64F)))
            else:
                s.append(rng.choice(words))
            s.append(rng.choice(["", " ", " ", "\n", "!"]))
        docs.append("".join(s))
    # combining marks (stacked diacritics on Latin letters)
    for _ in range(120):
        s = []
        for _ in range(rng.randint(10, 100)):
            c = rng.choice("aeiouAEIOUnNcCzZ")
            for _ in range(rng.randint(0, 4)):
                c += chr(rng.randint(0x0300, 0x036F))
            s.append(c)
            if rng.random() < 0.2:
                s.append(" ")
        docs.append("".join(s))
    # strings that look like special tokens, and the real ones
    looks = SPECIALS + ["<|begin_of_text|", "|begin_of_text|>", "<|BEGIN_OF_TEXT|>", "<| eot_id |>", "<|eot_id|><|eot_id|>",
                        "<<|eot_id|>>", "</s>", "<s>", "<unk>", "< s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
                        "<mask>", " <mask> ", "[[note]]", "[[note]", "xyzzy", "axyzzyb", " xyzzy ", "<extra>", " <extra>", "<0x41>", "<0xZZ>", "▁"]
    for _ in range(150):
        s = []
        for _ in range(rng.randint(3, 30)):
            s.append(rng.choice(looks) if rng.random() < 0.5 else rng.choice(words))
            s.append(rng.choice(["", " ", "  ", "\n", "\t"]))
        docs.append("".join(s))
    # contractions in odd cases (the regex is case-insensitive for them), incl. long s
    for _ in range(40):
        docs.append(" ".join(rng.choice(words) + rng.choice(["'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'M", "'T", "'ſ", "'", "''"])
                             for _ in range(rng.randint(5, 40))))
    # random assigned code points from the whole BMP and beyond
    for _ in range(120):
        s = []
        while len(s) < rng.randint(20, 200):
            cp = rng.randint(0x20, 0x2FFFF)
            if assigned(cp) and cp != 0x2581:
                s.append(chr(cp))
        docs.append("".join(s))
    # text that NFC changes: decomposed Latin, Hangul jamo, singletons (Angstrom, Ohm), marks in
    # non-canonical order; and compatibility characters NFC must leave alone
    for _ in range(40):
        s = []
        for _ in range(rng.randint(10, 60)):
            k = rng.random()
            if k < 0.3:
                s.append(unicodedata.normalize("NFD", rng.choice(["é", "Å", "ñ", "ü", "Ǻ", "ệ", "Ḗ", "ώ", "й", "ї"])))
            elif k < 0.5:
                s.append(chr(0x1100 + rng.randrange(19)) + chr(0x1161 + rng.randrange(21)) +
                         (chr(0x11A8 + rng.randrange(27)) if rng.random() < 0.5 else ""))
            elif k < 0.6:
                s.append(rng.choice(["\u212b", "\u2126", "\u212a", "\u0344", "\u0958", "\uf900", "\u1e9b\u0323"]))
            elif k < 0.75:
                s.append("a" + "".join(rng.choice(["\u0301", "\u0323", "\u031b", "\u0345", "\u0307", "\u05b0", "\u0bcd"])
                                       for _ in range(rng.randint(1, 4))))
            elif k < 0.85:
                s.append(rng.choice(["ﬁ", "Ａ", "①", "²", "ｶ", "㎏", "ſ"]))
            else:
                s.append(rng.choice(words))
            s.append(rng.choice(["", " ", " ", "\n"]))
        docs.append("".join(s))
    # long pieces: a word without spaces, a long run of one character, a long space run
    docs.append("a" * 3000)
    docs.append(" " * 2000 + "x")
    docs.append("\n" * 500)
    docs.append("".join(rng.choice("abcdefghij") for _ in range(5000)))
    docs.append("🙂" * 300)
    docs.append("1" * 1000)
    docs = [d for d in docs if d]
    rng.shuffle(docs)
    return docs


def write_corpus(docs, path):
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(docs)))
        for d in docs:
            b = d.encode("utf-8")
            f.write(struct.pack("<I", len(b)))
            f.write(b)


# ---------------------------------------------------------------- tokenizers
def train_bytelevel(docs):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=6000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(docs, trainer)
    # an added token with lstrip/rstrip, a normalized non-special one, a single_word one
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("[[note]]", special=False, normalized=False),
                    AddedToken("xyzzy", single_word=True, special=False, normalized=True)])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    bos = SPECIALS[0]
    j["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {bos: {"id": bos, "ids": [tok.token_to_id(bos)], "tokens": [bos]}}}]}
    return j


def train_sentencepiece(docs):
    # Train on Metaspace pieces with a limited alphabet (rare characters must use byte fallback),
    # then lay the vocab out as Llama 2 does: <unk> <s> </s>, 256 <0xNN> tokens, then the BPE vocab.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=4000, limit_alphabet=400, show_progress=False)
    tok.train_from_iterator(docs, trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    sp = Tokenizer(model)
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.add_special_tokens([AddedToken("<unk>", special=True, normalized=False),
                           AddedToken("<s>", special=True, normalized=False),
                           AddedToken("</s>", special=True, normalized=False)])
    # a normalized added token: HF matches its normalized form ("▁<extra>") in the normalized text
    sp.add_tokens([AddedToken("<extra>", special=False, normalized=True)])
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    j = json.loads(sp.to_str())
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return j


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(docs):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordPieceTrainer(vocab_size=6000, limit_alphabet=600, special_tokens=BERT_SPECIALS,
                                        show_progress=False)
    tok.train_from_iterator(docs, trainer)
    j = json.loads(tok.to_str())
    ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]")}
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in ids.items()}}
    return j


def minilm_dir():
    return os.environ.get("MINILM_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "factoid-engine", "all-MiniLM-L6-v2")


def load_minilm_tokenizer():
    # Truncation and padding are the caller's business in the engine (the encoder truncates to its
    # max_seq_length), so the ids compared are those with both off.
    path = os.path.join(minilm_dir(), "tokenizer.json")
    if not os.path.exists(path):
        return None
    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


def train_ours(docs):
    # Case (b): our trainer's output, loaded by HF. The test retrains with the same command and
    # checks that it reproduces this file's hash, so the file is an input, not an expectation.
    exe = os.path.join(ROOT, "tokenize")
    subprocess.run(["make", "-C", ROOT, "tokenize"], check=True, stdout=subprocess.DEVNULL)
    train_txt = os.path.join(OUT, "..", "..", "..", "build", "tokenizer_train_input.txt")
    os.makedirs(os.path.dirname(train_txt), exist_ok=True)
    with open(train_txt, "wb") as f:
        f.write(ours_training_text(docs))
    path = os.path.join(OUT, "ours.json")
    subprocess.run([exe, "train", "--vocab-size", "3000", "--special", ",".join(SPECIALS), "--bos", SPECIALS[0],
                    "--output", path, train_txt], check=True)
    return path


def ours_training_text(docs):
    # the first 400 documents, joined by newlines (the test rebuilds the same bytes)
    return "\n".join(docs[:400]).encode("utf-8")


VARIANTS = [
    # name, base file, replacements ("a.b" = nested key)
    ("llama3", "bytelevel.json", {}),
    ("qwen2", "bytelevel.json", {
        "model.ignore_merges": False,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}}),
    ("qwen2_nfc", "bytelevel.json", {
        "normalizer": {"type": "NFC"},
        "model.ignore_merges": False,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}}),
    ("gpt2", "bytelevel.json", {
        "model.ignore_merges": False,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None}),
    ("gpt2_prefix_space", "bytelevel.json", {
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "post_processor": None}),
    ("ours", "ours.json", {}),
    ("llama2", "sentencepiece.json", {}),
    ("metaspace", "sentencepiece.json", {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}}),
    ("bert", "wordpiece.json", {}),
    # cased, nothing cleaned or spaced out, and words over 8 characters become [UNK]
    ("bert_cased", "wordpiece.json", {
        "normalizer": {"type": "BertNormalizer", "clean_text": False, "handle_chinese_chars": False,
                       "strip_accents": False, "lowercase": False},
        "model.max_input_chars_per_word": 8,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False}}),
    # accents stripped without lowercasing
    ("bert_strip_accents", "wordpiece.json", {
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": True, "lowercase": False}}),
]


# Less common pipeline pieces, checked on the first 300 documents (keeps the fixtures small).
BL_STEP = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
EXTRA_VARIANTS = [
    ("split_removed_digits", "bytelevel.json", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Removed", "invert": False}, BL_STEP]}}),
    ("split_merged_next", "bytelevel.json", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "MergedWithNext", "invert": False}, BL_STEP]}}),
    ("split_merged_previous", "bytelevel.json", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False}, BL_STEP]}}),
    ("split_contiguous_invert", "bytelevel.json", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"[aeiou]"}, "behavior": "Contiguous", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"\p{L}+"}, "behavior": "Isolated", "invert": True}, BL_STEP]}}),
    ("metaspace_always_nosplit", "sentencepiece.json", {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": False},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": False}}),
]
EXTRA_DOCS = 300


def apply_variant(base, changes):
    j = json.loads(json.dumps(base))
    for key, value in changes.items():
        parts = key.split(".")
        node = j
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return j


def write_expected(tok, docs, path):
    special_flags = [i % 7 == 0 for i in range(len(docs))]
    plain = tok.encode_batch(docs, add_special_tokens=False)
    with_special = tok.encode_batch(docs, add_special_tokens=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(docs)))
        for i, d in enumerate(docs):
            ids = (with_special if special_flags[i] else plain)[i].ids
            text = tok.decode(ids, skip_special_tokens=False)
            f.write(struct.pack("<BIQ", int(special_flags[i]), len(ids), fnv_bytes(text.encode("utf-8"))))
            for b in range(0, len(ids), BLOCK):
                f.write(struct.pack("<Q", fnv_ids(ids[b:b + BLOCK])))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20261122)
    docs = build_corpus(rng)
    write_corpus(docs, os.path.join(OUT, "corpus.bin"))
    total = sum(len(d.encode("utf-8")) for d in docs)
    print(f"corpus: {len(docs)} documents, {total} bytes")
    assert total >= 1_000_000, "the parity corpus must be at least 1 MB"

    # HF's BPE trainer breaks ties between equally frequent pairs in hash-map order, which varies
    # from process to process; so the trained tokenizers are kept once committed, and only
    # retrained with --retrain. Everything else (corpus, expected ids) is regenerated exactly.
    bases = {}
    for name, train in (("bytelevel.json", train_bytelevel), ("sentencepiece.json", train_sentencepiece),
                        ("wordpiece.json", train_wordpiece)):
        path = os.path.join(OUT, name)
        if os.path.exists(path) and "--retrain" not in sys.argv:
            bases[name] = json.load(open(path, encoding="utf-8"))
            continue
        bases[name] = train(docs)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(bases[name], f, ensure_ascii=False, separators=(",", ":"))
    ours_path = train_ours(docs)
    bases["ours.json"] = json.load(open(ours_path, encoding="utf-8"))

    variants = []
    for name, base, changes in VARIANTS:
        tok = Tokenizer.from_str(json.dumps(apply_variant(bases[base], changes)))
        write_expected(tok, docs, os.path.join(OUT, f"expected_{name}.bin"))
        variants.append({"name": name, "base": base, "set": changes})
        print(f"{name}: done")
    for name, base, changes in EXTRA_VARIANTS:
        tok = Tokenizer.from_str(json.dumps(apply_variant(bases[base], changes)))
        write_expected(tok, docs[:EXTRA_DOCS], os.path.join(OUT, f"expected_{name}.bin"))
        variants.append({"name": name, "base": base, "set": changes, "docs": EXTRA_DOCS})
        print(f"{name}: done")
    with open(os.path.join(OUT, "variants.json"), "w", encoding="utf-8") as f:
        json.dump(variants, f, ensure_ascii=False, indent=1)
    minilm = load_minilm_tokenizer()
    if minilm is None:
        print(f"minilm: skipped, {minilm_dir()} has no tokenizer.json (scripts/install_deps.sh --minilm); "
              "the committed expected_minilm.bin is kept")
    else:
        write_expected(minilm, docs, os.path.join(OUT, "expected_minilm.bin"))
        print("minilm: done")
    write_tiktoken(bases["bytelevel.json"], docs)


def write_tiktoken(j, docs):
    # The byte-level model as a tiktoken rank file (rank = id), and the ids that the real tiktoken
    # library gives with the Llama 3 pattern and the special tokens.
    import base64
    import tiktoken
    byte_of = {c: b for b, c in zip(*bytes_to_unicode())}
    added = {a["content"]: a["id"] for a in j["added_tokens"]}
    ranks = {}
    for t, i in j["model"]["vocab"].items():
        if t not in added:
            ranks[bytes(byte_of[c] for c in t)] = i
    with open(os.path.join(OUT, "bytelevel.tiktoken"), "w") as f:
        for b, i in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(b).decode() + " " + str(i) + "\n")
    specials = {s: added[s] for s in SPECIALS}
    enc = tiktoken.Encoding("fixture", pat_str=LLAMA3, mergeable_ranks=ranks, special_tokens=specials,
                            explicit_n_vocab=None)
    with open(os.path.join(OUT, "expected_tiktoken.bin"), "wb") as f:
        f.write(struct.pack("<I", len(docs)))
        for d in docs:
            ids = enc.encode(d, allowed_special="all")
            f.write(struct.pack("<BIQ", 0, len(ids), fnv_bytes(enc.decode_bytes(ids))))
            for b in range(0, len(ids), BLOCK):
                f.write(struct.pack("<Q", fnv_ids(ids[b:b + BLOCK])))
    print("tiktoken: done")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


if __name__ == "__main__":
    sys.exit(main())
