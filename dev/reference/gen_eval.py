"""Reference fixture for greedy decoding and answer scoring (test/test_eval.cpp).

A random tiny LlamaForCausalLM (GQA, llama3 rope scaling, untied head) is saved in HF format under
test/fixtures/eval/tiny_llama/, and generate.json records, for a few random prompts:
  - transformers generate(do_sample=False) continuations, token for token;
  - per-example answer log-likelihoods (sum and mean of log p(answer_j | prompt, answer_<j)), the
    number of answer tokens that are the argmax of their row, and the rank of the first answer
    token, for random answers and for greedy answers (the first tokens of each continuation, all
    top-1). A rank is recorded as a range: logits within RANK_TOL of the answer token's may order
    either way under fp32 rounding;
  - the logits of prompt 0 at every position (to localize a forward-pass mismatch).
The init scale is large so that logits are peaked: the script checks that every greedy choice
wins by a clear margin, so fp32 rounding differences cannot flip a token.
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "eval")
SEED = 99
MAX_NEW = 12
MIN_MARGIN = 1e-2
RANK_TOL = 1e-4


def answer_stats(model, p, a):
    """Teacher-forced statistics of answer a after prompt p (float64 log-softmax)."""
    logits = model(torch.tensor([p + a])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    rows = [logits[len(p) - 1 + j] for j in range(len(a))]
    lp = [logp[len(p) - 1 + j, a[j]].item() for j in range(len(a))]
    top1 = sum(int(torch.argmax(r).item() == t) for r, t in zip(rows, a))
    r0, t0 = rows[0], a[0]
    rank_min = 1 + int((r0 > r0[t0] + RANK_TOL).sum().item())
    rank_max = 1 + int((r0 >= r0[t0] - RANK_TOL).sum().item()) - 1
    return {"sum_logprob": sum(lp), "mean_logprob": sum(lp) / len(lp), "top1": top1,
            "first_rank_min": rank_min, "first_rank_max": rank_max}


def main():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        initializer_range=0.3, bos_token_id=1, eos_token_id=2, torch_dtype="float32",
    )
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None  # record full-length continuations
    model.generation_config.pad_token_id = 0

    g = torch.Generator().manual_seed(SEED + 1)
    lengths = [1, 3, 5, 8, 13, 17, 24, 31]
    prompts = [torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
    answers = [torch.randint(3, cfg.vocab_size, (1 + i % 6,), generator=g).tolist() for i in range(len(prompts))]

    generated, scores, greedy_answers, greedy_scores = [], [], [], []
    with torch.no_grad():
        for p, a in zip(prompts, answers):
            ids = torch.tensor([p])
            out = model.generate(ids, do_sample=False, max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
                                 output_scores=True, return_dict_in_generate=True)
            new = out.sequences[0, len(p):].tolist()
            for step_scores in out.scores:
                top2 = torch.topk(step_scores[0].float(), 2).values
                assert (top2[0] - top2[1]).item() > MIN_MARGIN, "greedy choice too close; change SEED"
            generated.append(new)

            scores.append(answer_stats(model, p, a))
            ga = new[:1 + len(greedy_answers) % 4]
            greedy_answers.append(ga)
            greedy_scores.append(answer_stats(model, p, ga))
        logits0 = model(torch.tensor([prompts[7]])).logits[0].tolist()

    model.save_pretrained(os.path.join(OUT, "tiny_llama"), safe_serialization=True)
    with open(os.path.join(OUT, "generate.json"), "w") as f:
        json.dump({"max_new_tokens": MAX_NEW, "prompts": prompts, "generated": generated,
                   "answers": answers, "scores": scores, "greedy_answers": greedy_answers,
                   "greedy_scores": greedy_scores, "logits_prompt7": logits0}, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
