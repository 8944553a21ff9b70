"""Reference fixture for the scope detectors' equal error rate and F1 (eval/scope_detector.h,
test/test_eval_scope.cpp), computed here independently, by brute force in exact rational
arithmetic (Python standard library only: no numpy/sklearn, whose EER conventions differ).

Definitions (the ones docs/larimar.md states): a query is accepted at threshold t when its score
(nearest written fact's cosine) is >= t. FAR(t) = accepted out-of-scope / all out-of-scope,
FRR(t) = rejected in-scope / all in-scope. Over the candidate thresholds t = every distinct
observed score, the EER is (FAR + FRR) / 2 at the t where |FAR - FRR| is smallest, the lowest such
t on a tie. At a given threshold: precision = TP / (TP + FP) (0 when nothing is accepted),
recall = TP / (TP + FN), F1 = 2PR / (P + R) (0 when P + R = 0).

Scores are float32 values (rounded here through struct), several on a grid of 1/16 so that ties
between in- and out-of-scope scores occur; the thresholds include observed scores (the >= edge).
"""
import json
import os
import random
import struct
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "eval", "scope_metrics.json")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def metrics(pos, neg, threshold):
    best = None
    for t in sorted(set(pos) | set(neg)):
        far = Fraction(sum(1 for s in neg if s >= t), len(neg))
        frr = Fraction(sum(1 for s in pos if s < t), len(pos))
        gap = abs(far - frr)
        if best is None or gap < best[0]:  # strictly smaller: the lowest t wins a tie
            best = (gap, (far + frr) / 2, t)
    tp = sum(1 for s in pos if s >= threshold)
    fp = sum(1 for s in neg if s >= threshold)
    fn = len(pos) - tp
    p = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
    r = Fraction(tp, tp + fn)
    f1 = 2 * p * r / (p + r) if p + r else Fraction(0)
    return {"eer": float(best[1]), "eer_threshold": best[2], "precision": float(p), "recall": float(r),
            "f1": float(f1)}


def case(name, pos, neg, threshold):
    pos, neg, threshold = [f32(s) for s in pos], [f32(s) for s in neg], f32(threshold)
    return {"name": name, "in_scope": pos, "out_of_scope": neg, "threshold": threshold,
            "expected": metrics(pos, neg, threshold)}


def main():
    rng = random.Random(16)
    cases = [case("hand: in {0.9, 0.8, 0.6}, out {0.7, 0.3, 0.2, 0.1}", [0.9, 0.6, 0.8], [0.1, 0.7, 0.3, 0.2], 0.65)]
    for i in range(12):
        n_in, n_out = rng.randint(1, 40), rng.randint(1, 60)
        shift = rng.choice([0.0, 0.1, 0.3, 0.6])
        grid = i % 2 == 0  # on a 1/16 grid: many ties, within and across classes
        draw = (lambda m: round(max(-1, min(1, rng.gauss(m, 0.25))) * 16) / 16) if grid else \
            (lambda m: max(-1.0, min(1.0, rng.gauss(m, 0.25))))
        pos = [draw(0.2 + shift) for _ in range(n_in)]
        neg = [draw(0.2) for _ in range(n_out)]
        threshold = rng.choice(pos + neg) if i % 3 == 0 else rng.uniform(-0.2, 1.0)
        cases.append(case(f"random {i} ({'1/16 grid, ties' if grid else 'continuous'}, shift {shift})", pos, neg,
                          threshold))
    cases.append(case("separable", [0.95, 0.99, 1.0], [0.1, 0.5, 0.94], 0.945))
    cases.append(case("reversed", [0.1, 0.2], [0.8, 0.9, 0.95], 0.5))
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "dev/reference/gen_scope_metrics.py", "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
