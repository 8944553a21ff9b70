#!/usr/bin/env python3
"""Chat fixtures: conversations rendered and masked as the REMIX code's SFT data path does
(open-instruct's encode_with_messages_format, reimplemented here from its documented behaviour),
tokenized by HF `tokenizers`.

Behaviour reproduced:
  * each message's content is stripped; Tulu renders
        system    "<|system|>\\n" + content + "\\n"
        user      "<|user|>\\n" + content + "\\n"
        assistant "<|assistant|>\\n" + content + EOS-text + "\\n"
    and the whole text is stripped; the Llama 3 format renders
        "<|start_header_id|>" + role + "<|end_header_id|>\\n\\n" + content + "<|eot_id|>";
  * the whole text is tokenized once with special tokens (BOS from the post-processor);
  * labels start as the ids; for every non-assistant message i the label range
    [len(tok(render(m[:i]))), len(tok(render(m[:i+1]) + next-header))) is set to -100, where the
    next header "<|assistant|>\\n" (or the Llama 3 assistant header) is added when message i+1 is
    an assistant turn; the first label is always ignored (nothing predicts it).

Reads test/fixtures/dataloader/tokenizer.json (byte-level) and tokenizer_sp.json (SentencePiece
style), both written by gen_dataloader.py (rerun this script after that one when it changes its
tokenizers: test_dataloader_chat then fails until the fixtures follow); writes test/fixtures/dataloader/:
  tokenizer_llama3chat.json  tokenizer.json plus the Llama 3 header/end-of-turn special tokens
  chat.jsonl                 the conversations (messages/role-content and ShareGPT from/value lines)
  expected_chat.json         {"cases": [{"tokenizer", "template", "line", "tokens", "loss"}]}
"""
import json
import os

from tokenizers import AddedToken, Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "dataloader")

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris is the capital of France."}]},
    {"messages": [{"role": "system", "content": "Answer in one word."},
                  {"role": "user", "content": "  Where was the band founded? "},
                  {"role": "assistant", "content": "\nLondon\n"},
                  {"role": "user", "content": "And the river of that city?"},
                  {"role": "assistant", "content": "The Thames, which flows east."}]},
    {"conversations": [{"from": "human", "value": "Who wrote the song?"},
                       {"from": "gpt", "value": "The band wrote it in 1999."},
                       {"from": "human", "value": "Which album?"},
                       {"from": "gpt", "value": "Their second album: \"Tokyo\"."}]},
    # Two user messages in a row, and a trailing user message after the last reply.
    {"messages": [{"role": "user", "content": "Memorize: key xlgo6x06."},
                  {"role": "user", "content": "What was the key?"},
                  {"role": "assistant", "content": "xlgo6x06"},
                  {"role": "user", "content": "Thanks!"}]},
    # A reply first (nothing before it but BOS), non-ASCII text.
    {"messages": [{"role": "assistant", "content": "Bonjour, où est la gare ? Ça va."},
                  {"role": "user", "content": "Translate: the city of Lisbon"},
                  {"role": "assistant", "content": "la ville de Lisbonne"}]},
    # The first exchange of conversation 2 on its own (a turn-boundary truncation of it).
    {"messages": [{"role": "system", "content": "Answer in one word."},
                  {"role": "user", "content": "  Where was the band founded? "},
                  {"role": "assistant", "content": "\nLondon\n"}]},
]

LLAMA3_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def normalized(conv):
    if "messages" in conv:
        return [(m["role"], m["content"]) for m in conv["messages"]]
    return [(SHAREGPT_ROLES[m["from"]], m["value"]) for m in conv["conversations"]]


def concat_tulu(messages, eos):
    text = ""
    for role, content in messages:
        if role == "system":
            text += "<|system|>\n" + content.strip() + "\n"
        elif role == "user":
            text += "<|user|>\n" + content.strip() + "\n"
        else:
            text += "<|assistant|>\n" + content.strip() + eos + "\n"
    return text


def concat_llama3(messages, eos):
    return "".join("<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content.strip() + "<|eot_id|>"
                   for role, content in messages)


TEMPLATES = {
    "tulu": (concat_tulu, "<|assistant|>\n", True),
    "llama3": (concat_llama3, "<|start_header_id|>assistant<|end_header_id|>\n\n", False),
}


def encode_conversation(tok, messages, template, eos):
    concat, header, strip = TEMPLATES[template]
    text = concat(messages, eos)
    if strip:
        text = text.strip()
    ids = tok.encode(text, add_special_tokens=True).ids
    labels = list(ids)

    def n_tokens(s):
        return len(tok.encode(s, add_special_tokens=True).ids)

    for i, (role, _) in enumerate(messages):
        if role == "assistant":
            continue
        start = 0 if i == 0 else n_tokens(concat(messages[:i], eos))
        so_far = concat(messages[:i + 1], eos)
        if i + 1 < len(messages) and messages[i + 1][0] == "assistant":
            so_far += header
        end = n_tokens(so_far)
        for k in range(start, min(end, len(labels))):
            labels[k] = -100
    labels[0] = -100
    return ids, [0 if x == -100 else 1 for x in labels]


def eos_text(tok_json):
    # The same rule as the engine's Tokenizer::eos_id for these files: the special token the
    # post-processor appends, else the first special added token among the usual EOS names.
    added = {a["content"]: a for a in tok_json["added_tokens"]}
    for name in ("<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"):
        if name in added and added[name]["special"]:
            return name
    raise SystemExit("no EOS token")


def main():
    byte_path = os.path.join(OUT, "tokenizer.json")
    sp_path = os.path.join(OUT, "tokenizer_sp.json")
    llama3_path = os.path.join(OUT, "tokenizer_llama3chat.json")
    tok = Tokenizer.from_file(byte_path)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    tok.save(llama3_path)

    with open(os.path.join(OUT, "chat.jsonl"), "w") as f:
        for c in CONVERSATIONS:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")

    cases = []
    for tok_name, path, templates in (("tokenizer.json", byte_path, ["tulu"]),
                                      ("tokenizer_sp.json", sp_path, ["tulu"]),
                                      ("tokenizer_llama3chat.json", llama3_path, ["tulu", "llama3"])):
        tok = Tokenizer.from_file(path)
        with open(path) as f:
            eos = eos_text(json.load(f))
        for template in templates:
            for line, conv in enumerate(CONVERSATIONS, start=1):
                ids, loss = encode_conversation(tok, normalized(conv), template, eos)
                cases.append({"tokenizer": tok_name, "template": template, "line": line, "tokens": ids,
                              "loss": loss})
    with open(os.path.join(OUT, "expected_chat.json"), "w") as f:
        json.dump({"cases": cases}, f)
        f.write("\n")
    print(f"wrote {len(cases)} chat cases to {OUT}")


if __name__ == "__main__":
    main()
