#!/usr/bin/env python3
"""Dataloader fixtures: templated examples tokenized by HF `tokenizers`.

Writes test/fixtures/dataloader/:
  tokenizer.json   a small byte-level BPE (Llama 3 style: BOS from the post-processor, an
                   <|end_of_text|> EOS, <|user|>/<|assistant|> added tokens), trained here by HF
  tokenizer_sp.json  a small SentencePiece-style BPE (Llama 2 style: the normalizer prepends
                   "▁" and replaces spaces, byte fallback, <s> BOS, </s> EOS)
  qa.jsonl         question/answer records (input for ./prepare_data --mode qa)
  expected.json    {"bos": id, "eos": id, "templates": {name: text},
                    "cases": [{template, question, answer, prompt, answer_text, tokens, loss}],
                    "qa_plain": [[tokens], ...]  (qa.jsonl under the plain template),
                    "sp": {"bos", "eos", "cases"} (the same cases with tokenizer_sp.json)}

The prompt/answer split follows dataloader/prompt_template.h, implemented here independently:
prompt = template text before {answer} with its trailing spaces removed (the question filled in),
answer = those spaces + the answer; tokens = encode(prompt, add_special_tokens=True)
+ encode(answer, add_special_tokens=False) + [EOS if the template ends in {eos}]. A SentencePiece-style
tokenizer prepends its own space marker to the answer, so there the answer's leading spaces are dropped
(the tokens then equal HF's encoding of the whole text, as for byte-level BPE).
Everything is seeded and offline.
"""
import json
import os
import random

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "dataloader")

TEMPLATES = {
    "plain": "{question}\nThe answer is: {answer}{eos}",
    "kvr": "The value of key {key} is? {value}{eos}",
    "tulu": "<|user|>\n{prompt}\n<|assistant|>\n{answer}{eos}",
    "memorize": "Memorize the following passage:\n\n{answer}{eos}",
    "passage": "Complete the following partial passage:\n\n{prompt} {answer}{eos}",
}

WORDS = ("the of and to in is was for on that with as by at from his her which this are were be an has "
         "city river capital country born year wrote song film band album team player president king "
         "queen war island mountain language university company written directed founded located "
         "france paris berlin rome london tokyo madrid lisbon vienna prague answer question value key "
         "complete following partial passage memorize who what where when how many occupation genre "
         "producer composer screenwriter father mother sport religion color author director").split()


def corpus(rng):
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        s = " ".join(words) + rng.choice([".", "?", "!", ":", ""])
        if rng.random() < 0.2:
            s += " " + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
        lines.append(s)
    for t in TEMPLATES.values():
        lines.append(t.replace("{", "").replace("}", ""))
    return lines


def train_tokenizer(rng):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(rng), trainer=trainer)
    tok.add_tokens([AddedToken("<|user|>", special=False), AddedToken("<|assistant|>", special=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def train_sp_tokenizer(rng):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials, show_progress=False)
    # Train with words split before each "\u2581" (as SentencePiece does), then encode without a
    # pre-tokenizer like Llama 2's tokenizer.json: the learned merges never cross a word start.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    tok.train_from_iterator(corpus(rng), trainer=trainer)
    tok.pre_tokenizer = None
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok


def split_template(text):
    """(before_question, after_question, has_question, answer_prefix, eos) per prompt_template.h."""
    for a in ("{answer}", "{value}"):
        if a in text:
            pos = text.index(a)
            rest = text[pos + len(a):]
            break
    assert rest in ("", "{eos}")
    prompt_part = text[:pos]
    stripped = prompt_part.rstrip(" ")
    answer_prefix = prompt_part[len(stripped):]
    for q in ("{question}", "{prompt}", "{key}"):
        if q in stripped:
            i = stripped.index(q)
            return stripped[:i], stripped[i + len(q):], True, answer_prefix, rest == "{eos}"
    return stripped, "", False, answer_prefix, rest == "{eos}"


def tokenize(tok, eos, template, question, answer, sentencepiece=False):
    before, after, has_q, prefix, with_eos = split_template(template)
    prompt = before + (question.strip() + after if has_q else "")
    answer_text = prefix + answer.strip()
    p = tok.encode(prompt, add_special_tokens=True).ids
    a = tok.encode(answer.strip() if sentencepiece else answer_text, add_special_tokens=False).ids
    a += [eos] if with_eos else []
    return prompt, answer_text, p + a, [0] * len(p) + [1] * len(a)


def main():
    rng = random.Random(1234)
    os.makedirs(OUT, exist_ok=True)
    tok = train_tokenizer(rng)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    tok = Tokenizer.from_file(os.path.join(OUT, "tokenizer.json"))
    eos = tok.token_to_id("<|end_of_text|>")

    def rand_key():
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))

    cases = []
    inputs = [
        ("plain", "What is the capital of France?", "Paris"),
        ("plain", "  Who wrote the song?  ", " the band "),
        ("plain", "In what city was he born?", "Rome, Italy"),
        ("kvr", rand_key(), rand_key()),
        ("kvr", rand_key(), rand_key()),
        ("tulu", "What is the capital of France?", "Paris"),
        ("tulu", "Who is the president?", "the king of the island"),
        ("memorize", "", " ".join(rng.choice(WORDS) for _ in range(30))),
        ("passage", " ".join(rng.choice(WORDS) for _ in range(50)), " ".join(rng.choice(WORDS) for _ in range(50))),
        ("plain", "caf\u00e9 \u00fcber na\u00efve?", "\u00e9t\u00e9 \U0001F600"),
    ]
    for name, q, a in inputs:
        prompt, answer_text, tokens, loss = tokenize(tok, eos, TEMPLATES[name], q, a)
        cases.append({"template": name, "question": q, "answer": a, "prompt": prompt, "answer_text": answer_text,
                      "tokens": tokens, "loss": loss})

    records = []
    for i in range(40):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))).capitalize() + "?"
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        if i % 3 == 0:
            records.append({"question": q, "possible_answers": json.dumps([a, a.upper()])})
        else:
            records.append({"question": q, "answer": a})
    with open(os.path.join(OUT, "qa.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    qa_plain = []
    for r in records:
        a = json.loads(r["possible_answers"])[0] if "possible_answers" in r else r["answer"]
        qa_plain.append(tokenize(tok, eos, TEMPLATES["plain"], r["question"], a)[2])

    sp = train_sp_tokenizer(random.Random(99))
    sp.save(os.path.join(OUT, "tokenizer_sp.json"))
    # As in Llama 2's tokenizer.json, the <0xNN> byte tokens live in the model vocab only, not in
    # added_tokens (the trainer registered them as special tokens to reserve their ids).
    with open(os.path.join(OUT, "tokenizer_sp.json")) as f:
        j = json.load(f)
    j["added_tokens"] = [t for t in j["added_tokens"] if not t["content"].startswith("<0x")]
    with open(os.path.join(OUT, "tokenizer_sp.json"), "w") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)
    sp = Tokenizer.from_file(os.path.join(OUT, "tokenizer_sp.json"))
    sp_eos = sp.token_to_id("</s>")
    sp_cases, natural = [], 0
    for name, q, a in inputs:
        prompt, answer_text, tokens, loss = tokenize(sp, sp_eos, TEMPLATES[name], q, a, sentencepiece=True)
        sp_cases.append({"template": name, "question": q, "answer": a, "tokens": tokens, "loss": loss})
        full = sp.encode(prompt + answer_text, add_special_tokens=True).ids + [sp_eos]
        natural += full == tokens
    print("sentencepiece cases equal to the whole-text encoding: %d of %d" % (natural, len(inputs)))

    expected = {"bos": tok.token_to_id("<|begin_of_text|>"), "eos": eos, "vocab_size": tok.get_vocab_size(),
                "templates": TEMPLATES, "cases": cases, "qa_plain": qa_plain,
                "sp": {"bos": sp.token_to_id("<s>"), "eos": sp_eos, "cases": sp_cases}}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=0)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
