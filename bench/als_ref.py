#!/usr/bin/python3
"""NumPy/SciPy implicit-ALS reference for bench_als (same model, same data).

Usage: /usr/bin/python3 bench/als_ref.py <split.bin> [iters]

Reads the train/test split written by bench_als (format in bench/math/als.c),
fits implicit ALS with conjugate gradient exactly as core/math/als.c does
(c = 1 + alpha w, k = 64, lambda = 0.1, alpha = 10, 3 CG steps warm-started,
factors initialised from the same splitmix64 stream, seed 1), vectorised over
blocks of rows with scipy.sparse, and prints seconds per iteration and
NDCG@10 on the same evaluation users.
"""
import sys
import time

import numpy as np
import scipy.sparse as sp

K, LAMBDA, ALPHA, CG_STEPS, SEED = 64, 0.1, 10.0, 3, 1
BLOCK = 8192


def read_split(path):
    raw = open(path, "rb").read()
    off = 0

    def take(dtype, n):
        nonlocal off
        a = np.frombuffer(raw, dtype=dtype, count=n, offset=off)
        off += a.nbytes
        return a

    nu, ni, nnz, ntest, stride = take("<i8", 5)
    indptr = take("<i8", nu + 1)
    idx = take("<i4", nnz)
    w = take("<f4", nnz)
    tptr = take("<i8", nu + 1)
    titems = take("<i4", ntest)
    return int(nu), int(ni), indptr, idx, w, tptr, titems, int(stride)


def splitmix_uniform(seed, n):
    """The same stream as sx_als_new: uniform [0, 0.01) floats."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)) * np.float32(0.01)


def solve(X, Y, Cm1):
    """One half-step: CG on every row of X against fixed Y. Cm1 = alpha * W (CSR)."""
    G = (Y.T @ Y).astype(np.float32)
    G[np.diag_indices(K)] += np.float32(LAMBDA)
    n = X.shape[0]
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        a, b = Cm1.indptr[lo], Cm1.indptr[hi]
        cols = Cm1.indices[a:b]
        cm1 = Cm1.data[a:b]
        local_ptr = Cm1.indptr[lo:hi + 1] - a
        rows = np.repeat(np.arange(hi - lo), np.diff(local_ptr))
        Yg = Y[cols]                      # (m, K): the rows' observed items
        m = len(cols)
        x = X[lo:hi]

        def sparse(vals):
            return sp.csr_matrix((vals, np.arange(m), local_ptr), shape=(hi - lo, m))

        s = np.einsum("ij,ij->i", Yg, x[rows])
        r = -(x @ G) + sparse((cm1 + 1) - cm1 * s) @ Yg
        p = r.copy()
        rs_old = np.einsum("ij,ij->i", r, r)
        active = rs_old >= 1e-20
        for _ in range(CG_STEPS):
            Ap = p @ G + sparse(cm1 * np.einsum("ij,ij->i", Yg, p[rows])) @ Yg
            pAp = np.einsum("ij,ij->i", p, Ap)
            active &= pAp > 0
            step = np.where(active, rs_old / np.where(active, pAp, 1), 0).astype(np.float32)
            x += step[:, None] * p
            r -= step[:, None] * Ap
            rs_new = np.einsum("ij,ij->i", r, r)
            active &= rs_new >= 1e-20
            beta = np.where(active, rs_new / np.where(rs_old > 0, rs_old, 1), 0).astype(np.float32)
            p = r + beta[:, None] * p
            rs_old = rs_new
        X[lo:hi] = x


def ndcg10(U, V, indptr, idx, tptr, titems, stride):
    users = np.array([u for u in range(0, len(indptr) - 1, stride) if tptr[u + 1] > tptr[u]])
    disc = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for lo in range(0, len(users), 1024):
        us = users[lo:lo + 1024]
        S = U[us] @ V.T
        for j, u in enumerate(us):
            S[j, idx[indptr[u]:indptr[u + 1]]] = -np.inf
        top = np.argpartition(-S, 10, axis=1)[:, :10]
        for j, u in enumerate(us):
            t = top[j][np.lexsort((top[j], -S[j, top[j]]))]
            rel = titems[tptr[u]:tptr[u + 1]]
            hit = np.isin(t, rel)
            idcg = disc[:min(10, len(rel))].sum()
            total += (disc * hit).sum() / idcg
    return total / len(users), len(users)


def main():
    path = sys.argv[1]
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    nu, ni, indptr, idx, w, tptr, titems, stride = read_split(path)
    Cui = sp.csr_matrix((ALPHA * w.astype(np.float32), idx, indptr), shape=(nu, ni))
    Ciu = Cui.T.tocsr()
    Ciu.sort_indices()
    init = splitmix_uniform(SEED, (nu + ni) * K)
    U = init[:nu * K].reshape(nu, K).copy()
    V = init[nu * K:].reshape(ni, K).copy()
    secs, cpus = [], []
    for it in range(iters):
        t, c = time.perf_counter(), time.process_time()
        solve(U, V, Cui)
        solve(V, U, Ciu)
        secs.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        print(f"iter {it + 1}: {secs[-1]:.3f} s wall, {cpus[-1]:.3f} s cpu", flush=True)
    t = time.perf_counter()
    nd, n_eval = ndcg10(U, V, indptr, idx, tptr, titems, stride)
    print(f"RESULT numpy k={K} median_s_per_iter={np.median(secs):.3f} "
          f"median_cpu_s_per_iter={np.median(cpus):.3f} ndcg10={nd:.4f} "
          f"eval_users={n_eval} (eval {time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
