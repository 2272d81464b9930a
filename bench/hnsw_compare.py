#!/usr/bin/python3
"""hnswlib and faiss (IndexHNSWFlat) on the shared ANN set, same method as bench_hnsw.

Build with M=16, ef_construction=200 on 2 threads; sweep ef with single-thread
search (all queries in one call with the library's threads set to 1, so Python's
per-call overhead is not counted); queries/s over the thread's CPU time (headline,
robust when other processes share the cores) and over wall-clock time; for recall@10 targets 0.90 / 0.95 / 0.99 report the queries/s of the smallest
swept ef that reaches the target (median of the repeats). Data: $BENCH_DATA
(default ../shared/bench/data), files <prefix>.{base,query}.fvecs and <prefix>.gt.ivecs.

    /usr/bin/python3 bench/hnsw_compare.py [prefix] [repeats] [build_threads] [systems]

systems: comma list of hnswlib,faiss (default both). $BENCH_METRIC = l2 (default) | ip
(inner product: hnswlib space "ip", faiss METRIC_INNER_PRODUCT) as in bench_hnsw.
"""
import os
import sys
import time

import numpy as np

EFS = [10, 12, 14, 16, 18, 20, 22, 24, 28, 32, 36, 40, 44, 48, 56, 64, 72, 80, 88, 96, 112, 128, 144, 160, 192, 224, 256, 320, 400, 512]
TARGETS = [0.90, 0.95, 0.99]


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    return raw.reshape(-1, d + 1)[:, 1:].copy().view(dtype)


def sweep(name, search, query, gt, repeats):
    nq = len(query)
    found = {}
    print(f"{'ef':>6} {'recall':>8} {'qps(cpu)':>10} {'qps(wall)':>10}")
    for ef in EFS:
        times = []
        walls = []
        hits = 0
        for r in range(repeats):
            t0 = time.perf_counter()
            c0 = time.thread_time()
            labels = search(query, ef)
            times.append(time.thread_time() - c0)
            walls.append(time.perf_counter() - t0)
            if r == 0:
                hits = sum(len(set(np.asarray(labels[i]).ravel().tolist()) & set(gt[i, :10].tolist()))
                           for i in range(nq))
        qps = nq / sorted(times)[repeats // 2]
        wqps = nq / sorted(walls)[repeats // 2]
        recall = hits / (nq * 10)
        print(f"{ef:6d} {recall:8.4f} {qps:10.0f} {wqps:10.0f}", flush=True)
        for t in TARGETS:
            if t not in found and recall >= t:
                found[t] = (ef, recall, qps, wqps)
        if TARGETS[-1] in found:
            break
    for t in TARGETS:
        if t in found:
            ef, recall, qps, wqps = found[t]
            print(f"recall@10 >= {t:.2f}: ef={ef} recall={recall:.4f} qps(cpu)={qps:.0f} qps(wall)={wqps:.0f}")
            print(f"RESULT system={name} metric=ann.hnsw.qps_at_recall{round(t * 100):02d} value={qps:.6g} "
                  f"unit=queries/s ef={ef} recall={recall:.4f} wall_qps={wqps:.6g}", flush=True)
        else:
            print(f"recall@10 >= {t:.2f}: not reached")


def main():
    prefix = sys.argv[1] if len(sys.argv) > 1 else "synth-200k-d64"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    systems = (sys.argv[4] if len(sys.argv) > 4 else "hnswlib,faiss").split(",")
    d = os.environ.get("BENCH_DATA", "../shared/bench/data")
    base = read_vecs(f"{d}/{prefix}.base.fvecs", np.float32)
    query = read_vecs(f"{d}/{prefix}.query.fvecs", np.float32)
    gt = read_vecs(f"{d}/{prefix}.gt.ivecs", np.int32)
    n, dim = base.shape
    metric = os.environ.get("BENCH_METRIC", "l2")
    print(f"metric={metric}")

    if "hnswlib" in systems:
        import hnswlib
        idx = hnswlib.Index(space={"ip": "ip", "cosine": "cosine"}.get(metric, "l2"), dim=dim)
        idx.init_index(max_elements=n, M=16, ef_construction=200, random_seed=42)
        idx.set_num_threads(threads)
        t0 = time.perf_counter()
        c0 = time.process_time()
        idx.add_items(base, np.arange(n))
        build = time.perf_counter() - t0
        cpu = time.process_time() - c0
        idx.set_num_threads(1)
        print(f"hnswlib: n={n} d={dim} nq={len(query)} build {build:.2f} s ({threads} threads, {cpu:.2f} s CPU)")
        print(f"RESULT system=hnswlib metric=ann.hnsw.build_seconds value={build:.4g} unit=s threads={threads} "
              f"cpu_seconds={cpu:.4g} M=16 efc=200", flush=True)

        def hs(q, ef):
            idx.set_ef(ef)
            return idx.knn_query(q, k=10)[0]
        sweep("hnswlib", hs, query, gt, repeats)
        del idx

    if "faiss" in systems:
        import faiss
        faiss.omp_set_num_threads(threads)
        if metric == "ip":
            idx = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        else:
            idx = faiss.IndexHNSWFlat(dim, 16)
        idx.hnsw.efConstruction = 200
        t0 = time.perf_counter()
        c0 = time.process_time()
        idx.add(base)
        build = time.perf_counter() - t0
        cpu = time.process_time() - c0
        faiss.omp_set_num_threads(1)
        print(f"faiss IndexHNSWFlat: build {build:.2f} s ({threads} threads, {cpu:.2f} s CPU)")
        print(f"RESULT system=faiss metric=ann.hnsw.build_seconds value={build:.4g} unit=s threads={threads} "
              f"cpu_seconds={cpu:.4g} M=16 efc=200", flush=True)

        def fs(q, ef):
            idx.hnsw.efSearch = ef
            return idx.search(q, 10)[1]
        sweep("faiss", fs, query, gt, repeats)


if __name__ == "__main__":
    main()
