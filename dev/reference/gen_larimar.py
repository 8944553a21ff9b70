"""Reference results for the Larimar memory operations (larimar/, test/test_larimar.cpp), all in
float64: pseudo-inverses from numpy.linalg.pinv, one-shot write/read, the paper's Ben-Israel-Cohen
iteration unrolled in numpy, sequential write/forget checked against one-shot least squares
(numpy.linalg.lstsq over the episodes that remain), and gradients of write -> sampled read -> loss
from PyTorch autograd (torch.linalg.pinv, and the unrolled iteration).

Writes test/fixtures/larimar/memory.json. With --convergence-table, also prints the convergence of
the iteration on random Gaussian memories K x C (docs/larimar.md quotes it; a few minutes)."""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "larimar", "memory.json")

SCALE = 5e-4  # X0 = SCALE * A^T, as the paper's code
RTOL = 1e-10  # exact pseudo-inverse: singular values <= RTOL * largest are zero (as larimar/pinv.h)
STEPS = 15


def mat(a):
    return np.asarray(a, dtype=np.float64).tolist()


def pinv_np(a):
    return np.linalg.pinv(a, rtol=RTOL)


def bic(a, scale=SCALE, steps=STEPS):
    x = scale * a.T
    for _ in range(steps):
        x = 2 * x - x @ a @ x
    return x


def with_singular_values(rng, m, n, sigma):
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.zeros((m, n))
    s[np.arange(len(sigma)), np.arange(len(sigma))] = sigma
    return u @ s @ v.T


def lstsq_memory(ref_pinv, episodes, c0, m0):
    """argmin_M sum ||Z_i - W_i M||^2 + c0 ||M - M0||^2 with W_i = Z_i ref_pinv, by lstsq."""
    w = np.concatenate([z @ ref_pinv for z in episodes])
    z = np.concatenate(episodes)
    k = ref_pinv.shape[1]
    if c0 > 0:
        w = np.concatenate([w, np.sqrt(c0) * np.eye(k)])
        z = np.concatenate([z, np.sqrt(c0) * m0])
    sol, _, rank, _ = np.linalg.lstsq(w, z, rcond=None)
    assert rank == k, "the reference least-squares problem must have a unique solution"
    return sol


def sequential_case(rng, name, k, c, c0, sizes, forget):
    m0 = rng.standard_normal((k, c))
    m_ref = rng.standard_normal((k, c))
    ref_pinv = pinv_np(m_ref)
    episodes = [rng.standard_normal((n, c)) for n in sizes]
    after_writes = lstsq_memory(ref_pinv, episodes, c0, m0)
    kept = [e for i, e in enumerate(episodes) if i not in forget]
    after_forgets = lstsq_memory(ref_pinv, kept, c0, m0)
    return {"name": name, "K": k, "C": c, "c0": c0, "M0": mat(m0), "M_ref": mat(m_ref),
            "episodes": [mat(e) for e in episodes], "forget": forget,
            "after_writes": mat(after_writes), "after_forgets": mat(after_forgets)}


def grad_case(rng, kind):
    k, c, n, nq = 4, 6, 3, 2
    t = lambda *s: torch.tensor(rng.standard_normal(s), dtype=torch.float64, requires_grad=True)
    m0, z, zq = t(k, c), t(n, c), t(nq, c)
    logvar = torch.tensor(0.3 * rng.standard_normal(k), dtype=torch.float64, requires_grad=True)
    eps = torch.tensor(rng.standard_normal((nq, k)), dtype=torch.float64)
    up = torch.tensor(rng.standard_normal((nq, c)), dtype=torch.float64)
    beta = 0.7
    pinv = (lambda a: torch.linalg.pinv(a, rtol=RTOL)) if kind == "exact" else (
        lambda a: _bic_torch(a))
    w0 = z @ pinv(m0)
    m = pinv(w0) @ z
    wbar = zq @ pinv(m)
    w = wbar + torch.exp(0.5 * logvar) * eps
    zr = w @ m
    kl = 0.5 * (wbar.pow(2).sum() + nq * (torch.exp(logvar) - 1 - logvar).sum())
    loss = (up * zr).sum() + beta * kl
    loss.backward()
    return {"kind": kind, "M0": mat(m0.detach()), "Z": mat(z.detach()), "Zq": mat(zq.detach()),
            "logvar": logvar.detach().tolist(), "eps": mat(eps), "dZr": mat(up), "beta": beta,
            "M": mat(m.detach()), "Zr": mat(zr.detach()), "kl": kl.item(), "loss": loss.item(),
            "dM0": mat(m0.grad), "dZ": mat(z.grad), "dZq": mat(zq.grad), "dlogvar": logvar.grad.tolist()}


def _bic_torch(a):
    x = SCALE * a.T
    for _ in range(STEPS):
        x = 2 * x - x @ a @ x
    return x


def convergence_table(rng):
    """Relative error of the 15-step iteration from 5e-4*A^T, for Gaussian N(0,1) memories K x C."""
    rows = []
    for k, c in [(8, 16), (64, 96), (128, 128), (512, 512), (512, 768), (512, 1024), (512, 1536),
                 (512, 2048), (512, 4096)]:
        a = rng.standard_normal((k, c))
        s = np.linalg.svd(a, compute_uv=False)
        with np.errstate(over="ignore", invalid="ignore"):  # the diverging rows overflow to nan
            x = bic(a)
        err = np.linalg.norm(x - pinv_np(a)) / np.linalg.norm(pinv_np(a))
        rows.append((k, c, SCALE * s[0] ** 2, SCALE * s[-1] ** 2, err))
    print("K     C      s*smax^2   s*smin^2   rel.err after 15 steps")
    for r in rows:
        print("%-5d %-6d %-10.4g %-10.4g %.3g" % r)


def main():
    rng = np.random.default_rng(15)
    out = {"scale": SCALE, "steps": STEPS}

    out["pinv"] = []
    for m, n in [(5, 9), (9, 5), (6, 6), (1, 7), (7, 1)]:
        a = rng.standard_normal((m, n))
        out["pinv"].append({"A": mat(a), "pinv": mat(pinv_np(a))})
    a = rng.standard_normal((6, 3)) @ rng.standard_normal((3, 9))  # rank 3: the SVD route
    out["pinv"].append({"A": mat(a), "pinv": mat(pinv_np(a))})

    out["write_read"] = []
    for k, c, n, nq in [(8, 12, 5, 4), (8, 12, 11, 3)]:
        m0, z, zq = rng.standard_normal((k, c)), rng.standard_normal((n, c)), rng.standard_normal((nq, c))
        w0 = z @ pinv_np(m0)
        m = pinv_np(w0) @ z
        w = zq @ pinv_np(m)
        out["write_read"].append({"M0": mat(m0), "Z": mat(z), "Zq": mat(zq), "W0": mat(w0), "M": mat(m),
                                  "W": mat(w), "Zr": mat(w @ m)})

    # The iteration on matrices with prescribed singular values: the error of the component of
    # singular value sigma after T steps is |1 - scale*sigma^2|^(2^T) (relative).
    out["iterative"] = []
    for name, m, n, s2 in [("converges", 6, 9, [1.9, 1.2, 0.7, 0.2, 0.05, 0.01]),
                           ("converges tall", 9, 5, [1.5, 1.0, 0.5, 0.1, 0.02]),
                           ("too small to converge", 5, 8, [1.0, 0.5, 0.1, 1e-4, 1e-5]),
                           ("diverges", 4, 7, [2.2, 1.0, 0.5, 0.1])]:
        sigma = np.sqrt(np.array(s2) / SCALE)
        a = with_singular_values(rng, m, n, sigma)
        case = {"name": name, "A": mat(a), "sigma": sigma.tolist(), "pinv": mat(pinv_np(a))}
        if name != "diverges":
            x = bic(a)
            case["iterate"] = mat(x)
            # predicted relative error per singular component
            case["component_error"] = (np.abs(1 - SCALE * sigma ** 2) ** (2 ** STEPS)).tolist()
        out["iterative"].append(case)

    # write/read through the iteration on a memory where it converges (K=64, C=96, N(0,1) prior)
    k, c, n, nq = 64, 96, 80, 10
    m0, z, zq = rng.standard_normal((k, c)), rng.standard_normal((n, c)), rng.standard_normal((nq, c))
    w0 = z @ bic(m0)
    # the paper's recipe with every pseudo-inverse by the iteration, unconverged components included
    m = bic(w0) @ z
    wq = zq @ bic(m)
    out["write_read_iterative"] = {"M0": mat(m0), "Z": mat(z), "Zq": mat(zq), "M": mat(m), "Zr": mat(wq @ m)}

    out["sequential"] = [
        sequential_case(rng, "c0 = 0, first episode of 70 >= K rows, then single rows", 6, 10, 0.0,
                        [70, 1, 1, 3, 1, 2], [2, 3]),
        sequential_case(rng, "c0 = 0.5, single-row episodes", 6, 10, 0.5, [1] * 9, [0, 4, 8]),
        sequential_case(rng, "c0 = 1e-3, small episodes, K = 16", 16, 24, 1e-3, [3, 5, 1, 7, 2, 4], [1]),
    ]

    out["grads"] = [grad_case(rng, "exact"), grad_case(rng, "iterative")]

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT)
    if "--convergence-table" in sys.argv:
        convergence_table(np.random.default_rng(0))


if __name__ == "__main__":
    main()
