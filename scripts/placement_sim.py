#!/usr/bin/env python3
"""Placement and failover simulation for Enclave's scale-out design (docs/scale-out.md).

    python3 scripts/placement_sim.py                       # 1M workspaces, N = 10, 50, 100
    python3 scripts/placement_sim.py --workspaces 100000 --nodes 20 --vnodes 200 --seed 3
    python3 -m unittest scripts/test_placement_sim.py       # the invariants, on small populations

Standard library only, deterministic for a given --seed. It places a population of workspaces on
N nodes with each scheme below and prints, per N, Markdown tables of:

- load balance: max/mean per node of workspaces, bytes and (hot) request rate, with the floor no
  placement can beat (the busiest single workspace is on one node: a workspace has one writer);
- moves per node failure (the node holding the most bytes fails) and per node addition, against
  the ideal (the failed node's share; 1/(N+1) of the workspaces);
- the hydration storm of a failure: which moved workspaces were resident (hot) and must be
  downloaded from the object store by their new nodes, bytes and count, the busiest receiver's
  share, the time until every one is back at --bandwidth-mbs per node, and the time until 50/90/99%
  of the failed node's hot request rate is served again, downloading hot-first (by request rate)
  against an arbitrary order.

Schemes (node ids are stable integers; a new node gets the next id):

- ``modulo``: node = hash(ws) mod N (what a proxy's map-based hash does).
- ``ring``: consistent hashing with --vnodes virtual nodes per node (Ketama; HAProxy ``hash-type
  consistent``, Envoy ``RING_HASH``, nginx ``hash ... consistent``); ``ring@V`` with V of them.
- ``maglev``: Maglev hashing (Envoy ``MAGLEV``): a lookup table of 65,537 slots shared out evenly;
  minimal, not zero, disruption when nodes change.
- ``hrw``: rendezvous / highest-random-weight hashing: the node with the highest hash(ws, node).
- ``bounded``: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; HAProxy
  ``hash-balance-factor``, Envoy ``hash_balance_factor``): a workspace goes to the first node
  clockwise from its hash whose load (workspace count, or request rate with --bound-on requests)
  stays under factor x the mean. ``bounded`` is recomputed from scratch after a change (what a
  stateless proxy computes); ``bounded+`` keeps every placed workspace where it is and re-places
  only the displaced ones (what a placement recorded in the control plane allows).

The population: workspace ids are random 128-bit values; sizes follow a Zipf law over a random
ranking (the biggest has --max-chunks chunks, rank r has max_chunks * r^-size_exp), bytes =
--base-bytes + chunks * --bytes-per-chunk (defaults from the README's measurements: 176 KiB per
workspace database, 5,147 bytes per chunk for a 100k-chunk workspace's folder); request rates follow
a Zipf law (exponent --activity-exp) over an independent random ranking; the top --hot-fraction
by request rate are the hot, resident workspaces (the rest are offloaded to the object store).
"""
import argparse
import array
import bisect
import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def h64(data: bytes) -> int:
    """A 64-bit hash (BLAKE2b): what a proxy's hash function stands for."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass
class Population:
    ids: list  # 16-byte workspace ids
    keys: array.array  # 64-bit hash of each id ('Q')
    size: array.array  # bytes on disk when resident ('Q')
    rate: array.array  # share of all requests (sums to 1) ('d')
    hot: bytearray  # 1 for the resident (hot) workspaces

    def __len__(self):
        return len(self.ids)


def make_population(n, seed=17, max_chunks=100_000, size_exp=0.7, activity_exp=1.0,
                    hot_fraction=0.01, base_bytes=176 * KIB, bytes_per_chunk=5147):
    """A deterministic population of `n` workspaces (see the module docstring)."""
    rng = random.Random(seed)
    raw = rng.randbytes(16 * n)
    ids = [raw[i:i + 16] for i in range(0, 16 * n, 16)]
    keys = array.array("Q", (h64(i) for i in ids))
    # two independent random rankings (sorting by two unrelated random keys: C-speed shuffles)
    shuffle_a = array.array("Q", rng.randbytes(8 * n))
    shuffle_b = array.array("Q", rng.randbytes(8 * n))
    size_rank = array.array("L", bytes(array.array("L").itemsize * n))
    for r, i in enumerate(sorted(range(n), key=shuffle_a.__getitem__), start=1):
        size_rank[i] = r
    rate_rank = array.array("L", bytes(array.array("L").itemsize * n))
    for r, i in enumerate(sorted(range(n), key=shuffle_b.__getitem__), start=1):
        rate_rank[i] = r
    size = array.array("Q", (base_bytes + int(max_chunks * r ** -size_exp) * bytes_per_chunk
                             for r in size_rank))
    harmonic = math.fsum(r ** -activity_exp for r in range(1, n + 1))
    rate = array.array("d", (r ** -activity_exp / harmonic for r in rate_rank))
    hot_count = max(1, int(n * hot_fraction)) if hot_fraction > 0 else 0
    hot = bytearray(1 if r <= hot_count else 0 for r in rate_rank)
    return Population(ids, keys, size, rate, hot)


# ---------------------------------------------------------------- schemes
# Each takes the population and the list of live node ids and returns array('H') of node ids.


def place_modulo(pop, nodes):
    count = len(nodes)
    return array.array("H", (nodes[k % count] for k in pop.keys))


class Ring:
    """A Ketama-style ring: V points per node, a key goes to the first point clockwise."""

    def __init__(self, nodes, vnodes):
        points = sorted((h64(b"node-%d-vnode-%d" % (node, v)), node)
                        for node in nodes for v in range(vnodes))
        self.hashes = [p for p, _ in points]
        self.owners = [o for _, o in points]

    def first(self, key):
        i = bisect.bisect_right(self.hashes, key)
        return i if i < len(self.hashes) else 0


def place_ring(pop, nodes, vnodes=100):
    ring = Ring(nodes, vnodes)
    hashes, owners, size = ring.hashes, ring.owners, len(ring.hashes)
    out = array.array("H", bytes(2 * len(pop)))
    for i, key in enumerate(pop.keys):
        j = bisect.bisect_right(hashes, key)
        out[i] = owners[j if j < size else 0]
    return out


def maglev_table(nodes, size=65537):
    """Maglev's lookup table (Eisenbud et al., NSDI 2016, section 3.4; Envoy's MAGLEV, default
    table size 65537): each node fills the slots of its own permutation of the table in turn."""
    perms = []
    for node in nodes:
        offset = h64(b"maglev-offset-%d" % node) % size
        skip = h64(b"maglev-skip-%d" % node) % (size - 1) + 1
        perms.append((node, offset, skip))
    table = [-1] * size
    nxt = [0] * len(perms)
    filled = 0
    while True:
        for k, (node, offset, skip) in enumerate(perms):
            c = (offset + nxt[k] * skip) % size
            while table[c] >= 0:
                nxt[k] += 1
                c = (offset + nxt[k] * skip) % size
            table[c] = node
            nxt[k] += 1
            filled += 1
            if filled == size:
                return table


def place_maglev(pop, nodes, size=65537):
    table = maglev_table(nodes, size)
    return array.array("H", (table[k % size] for k in pop.keys))


def place_hrw(pop, nodes):
    """Rendezvous hashing. score(ws, node) is the node-th 32-bit word of SHAKE-128(ws id): an
    extendable-output hash, so a node's score never depends on which other nodes exist (a new
    node id only extends the output), as HRW needs."""
    top = max(nodes) + 1
    dead = [n for n in range(top) if n not in set(nodes)]
    width = 4 * top
    out = array.array("H", bytes(2 * len(pop)))
    for i, wid in enumerate(pop.ids):
        scores = array.array("I", hashlib.shake_128(wid).digest(width))
        for d in dead:
            scores[d] = 0
        out[i] = scores.index(max(scores))
    return out


def hrw_scenarios(pop, nodes, added):
    """HRW's placements on `nodes`, on `nodes` without any one of them, and on `nodes` plus the
    node `added`, in one pass: per workspace the best and second-best of `nodes` and the score of
    `added`. By HRW's definition (the highest score among the live nodes), when node f fails a
    workspace whose best is f goes to its second-best and every other stays; the added node takes
    a workspace when its score beats the best. `place_hrw` computes each from scratch; the tests
    check that both agree."""
    top = max(max(nodes), added) + 1
    dead = [n for n in range(top) if n not in set(nodes)]
    width = 4 * top
    best = array.array("H", bytes(2 * len(pop)))
    second = array.array("H", bytes(2 * len(pop)))
    grown = array.array("H", bytes(2 * len(pop)))
    for i, wid in enumerate(pop.ids):
        scores = array.array("I", hashlib.shake_128(wid).digest(width))
        extra = scores[added]
        for d in dead + [added]:
            scores[d] = 0
        first_score = max(scores)
        b = scores.index(first_score)
        best[i] = b
        grown[i] = added if extra > first_score else b
        scores[b] = 0
        second[i] = scores.index(max(scores))
    return best, second, grown


def weights_of(pop, bound_on):
    if bound_on == "count":
        return None
    if bound_on == "requests":
        return pop.rate
    if bound_on == "bytes":
        return pop.size
    raise ValueError(bound_on)


def place_bounded(pop, nodes, vnodes=100, factor=1.10, bound_on="count", keep=None):
    """Consistent hashing with bounded loads, workspaces taken in id order (creation order).
    With `keep` (a previous placement), every workspace whose node is still live stays there and
    only the others are placed, walking the ring from their hash; a workspace whose first choice
    is a node `keep` does not know (an added node) is placed again too, so a new node fills."""
    ring = Ring(nodes, vnodes)
    hashes, owners, size = ring.hashes, ring.owners, len(ring.hashes)
    weights = weights_of(pop, bound_on)
    total = len(pop) if weights is None else math.fsum(weights)
    cap = factor * total / len(nodes)
    load = {n: 0.0 for n in nodes}
    out = array.array("H", bytes(2 * len(pop)))
    todo = []
    live = set(nodes)
    fresh = live - set(keep) if keep is not None else set()
    for i in range(len(pop)):
        if fresh:  # an added node takes what the ring gives it first; the rest stays
            j = bisect.bisect_right(hashes, pop.keys[i])
            first_choice = owners[j if j < size else 0]
        else:
            first_choice = None
        if keep is not None and keep[i] in live and first_choice not in fresh:
            out[i] = keep[i]
            load[keep[i]] += 1.0 if weights is None else weights[i]
        else:
            todo.append(i)
    for i in todo:
        w = 1.0 if weights is None else weights[i]
        j = bisect.bisect_right(hashes, pop.keys[i])
        for step in range(size):
            node = owners[(j + step) % size]
            if load[node] + w <= cap:
                break
        else:  # heavier than any node's room (a single very busy workspace): the least loaded
            node = min(nodes, key=load.__getitem__)
        load[node] += w
        out[i] = node
    return out


SCHEMES = ("modulo", "ring", "maglev", "hrw", "bounded", "bounded+")
DEFAULT_SCHEMES = ("modulo", "ring@10", "ring", "ring@1000", "maglev", "hrw", "bounded",
                   "bounded+")


def scheme_ok(scheme):
    if scheme.startswith("ring@"):
        return scheme[5:].isdigit() and int(scheme[5:]) > 0
    return scheme in SCHEMES


def place(scheme, pop, nodes, args, previous=None):
    """`scheme` is one of SCHEMES, or ring@V: consistent hashing with V virtual nodes per node."""
    if scheme == "modulo":
        return place_modulo(pop, nodes)
    if scheme == "ring":
        return place_ring(pop, nodes, args.vnodes)
    if scheme.startswith("ring@"):
        return place_ring(pop, nodes, int(scheme[5:]))
    if scheme == "maglev":
        return place_maglev(pop, nodes)
    if scheme == "hrw":
        return place_hrw(pop, nodes)
    if scheme == "bounded":
        return place_bounded(pop, nodes, args.vnodes, args.balance_factor, args.bound_on)
    if scheme == "bounded+":
        return place_bounded(pop, nodes, args.vnodes, args.balance_factor, args.bound_on,
                             keep=previous)
    raise ValueError(scheme)


# ---------------------------------------------------------------- measures


def per_node(placement, nodes, values=None):
    totals = {n: 0.0 for n in nodes}
    if values is None:
        for node in placement:
            totals[node] += 1
    else:
        for node, v in zip(placement, values):
            totals[node] += v
    return totals


def max_over_mean(totals):
    mean = math.fsum(totals.values()) / len(totals)
    return max(totals.values()) / mean if mean else 0.0


def balance(pop, placement, nodes):
    """max/mean per node of workspaces, bytes, requests and hot requests (one pass)."""
    count = {n: 0 for n in nodes}
    size = {n: 0 for n in nodes}
    rate = {n: 0.0 for n in nodes}
    hot = {n: 0.0 for n in nodes}
    for node, b, r, h in zip(placement, pop.size, pop.rate, pop.hot):
        count[node] += 1
        size[node] += b
        rate[node] += r
        if h:
            hot[node] += r
    return {"workspaces": max_over_mean(count), "bytes": max_over_mean(size),
            "requests": max_over_mean(rate), "hot_requests": max_over_mean(hot)}


def moved(before, after):
    return [i for i, (a, b) in enumerate(zip(before, after)) if a != b]


def hydration(pop, before, after, failed, bandwidth, latency, concurrency, everything=False):
    """The storm after `failed` fails: every moved workspace that was resident (hot) is downloaded
    by its new node; each node downloads its share at `bandwidth` bytes/s, plus `latency` s per
    workspace spread over `concurrency` parallel downloads. Returns counts, bytes, the time until
    all are back, and the times until 50/90/99% of the failed node's hot request rate is served,
    hot-first against an arbitrary (id) order. With `everything`, every moved workspace is
    downloaded, resident or not (a cluster without tiering, restoring a lost node's disk)."""
    moved_hot = [i for i, (a, b) in enumerate(zip(before, after))
                 if a != b and (everything or pop.hot[i])]
    by_receiver = {}
    for i in moved_hot:
        by_receiver.setdefault(after[i], []).append(i)
    result = {
        "hot_moved": len(moved_hot),
        "hot_bytes": sum(pop.size[i] for i in moved_hot),
        "receivers": len(by_receiver),
        "max_receiver_bytes": max((sum(pop.size[i] for i in v) for v in by_receiver.values()),
                                  default=0),
    }
    failed_rate = math.fsum(pop.rate[i] for i in moved_hot if before[i] == failed)

    def completion(order_key):
        done = []  # (time, rate of the failed node's workspace)
        last = 0.0
        for members in by_receiver.values():
            t_bytes = 0.0
            for k, i in enumerate(sorted(members, key=order_key), start=1):
                t_bytes += pop.size[i] / bandwidth
                t = t_bytes + math.ceil(k / concurrency) * latency
                last = max(last, t)
                if before[i] == failed:
                    done.append((t, pop.rate[i]))
        done.sort()
        marks = {}
        acc = 0.0
        targets = [0.5, 0.9, 0.99]
        for t, r in done:
            acc += r
            while targets and failed_rate and acc >= targets[0] * failed_rate - 1e-15:
                marks[targets.pop(0)] = t
        return last, marks

    last, hot_first = completion(lambda i: -pop.rate[i])
    _, arbitrary = completion(lambda i: pop.keys[i])
    result.update(all_back_s=last, hot_first=hot_first, arbitrary=arbitrary)
    return result


def fmt_bytes(n):
    for unit, size in (("TiB", 1024 * GIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_s(s):
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def run(args, out=sys.stdout):
    started = time.monotonic()
    pop = make_population(args.workspaces, args.seed, args.max_chunks, args.size_exp,
                          args.activity_exp, args.hot_fraction, args.base_bytes,
                          args.bytes_per_chunk)
    total_bytes = sum(pop.size)
    hot_total = sum(pop.hot)
    hot_bytes = sum(s for s, h in zip(pop.size, pop.hot) if h)
    top_rate = max(pop.rate)
    print(f"# placement_sim: {len(pop):,} workspaces, seed {args.seed}", file=out)
    print(file=out)
    print(f"- bytes: {fmt_bytes(total_bytes)} in all, mean {fmt_bytes(total_bytes / len(pop))}, "
          f"largest {fmt_bytes(max(pop.size))}; hot (resident): {hot_total:,} workspaces, "
          f"{fmt_bytes(hot_bytes)}, {100 * math.fsum(r for r, h in zip(pop.rate, pop.hot) if h):.1f}% "
          f"of requests; the busiest workspace has {100 * top_rate:.2f}% of all requests", file=out)
    print(f"- schemes: {', '.join(args.schemes)}; ring, bounded: {args.vnodes} virtual nodes per "
          f"node (ring@V: V); bounded: factor {args.balance_factor} on {args.bound_on}", file=out)
    print(f"- hydration: {args.bandwidth_mbs:g} MB/s per node, {args.latency_ms:g} ms per workspace, "
          f"{args.concurrency} parallel downloads per node", file=out)
    print(file=out)
    bandwidth = args.bandwidth_mbs * 1e6
    latency = args.latency_ms / 1000
    for n in args.nodes:
        nodes = list(range(n))
        floor = max(1.0, n * top_rate)
        print(f"## N = {n} nodes (fair share {len(pop) / n:,.0f} workspaces, "
              f"{fmt_bytes(total_bytes / n)}; request floor max/mean {floor:.2f})", file=out)
        print(file=out)
        rows_balance, rows_moves, rows_storm = [], [], []
        bounded_base = None  # bounded and bounded+ place the first time alike
        for scheme in args.schemes:
            t0 = time.monotonic()
            if scheme == "hrw":  # one pass instead of three (see hrw_scenarios)
                base, second, after_add = hrw_scenarios(pop, nodes, n)
            elif scheme in ("bounded", "bounded+") and bounded_base is not None:
                base = bounded_base
            else:
                base = place(scheme, pop, nodes, args)
            if scheme in ("bounded", "bounded+"):
                bounded_base = base
            bal = balance(pop, base, nodes)
            bytes_per = per_node(base, nodes, pop.size)
            failed = max(nodes, key=bytes_per.__getitem__)
            on_failed = sum(1 for x in base if x == failed)
            survivors = [x for x in nodes if x != failed]
            if scheme == "hrw":
                after_fail = array.array("H", (s if b == failed else b
                                               for b, s in zip(base, second)))
            else:
                after_fail = place(scheme, pop, survivors, args, previous=base)
                after_add = place(scheme, pop, nodes + [n], args, previous=base)
            fail_moves = moved(base, after_fail)
            add_moves = len(moved(base, after_add))
            storm = hydration(pop, base, after_fail, failed, bandwidth, latency, args.concurrency)
            whole = hydration(pop, base, after_fail, failed, bandwidth, latency, args.concurrency,
                              everything=True)
            elapsed = time.monotonic() - t0
            rows_balance.append(
                f"| {scheme} | {bal['workspaces']:.3f} | {bal['bytes']:.3f} | "
                f"{bal['requests']:.3f} | {bal['hot_requests']:.3f} |")
            rows_moves.append(
                f"| {scheme} | {on_failed:,} | {len(fail_moves):,} | "
                f"{len(fail_moves) - on_failed:,} | {add_moves:,} | "
                f"{add_moves / (len(pop) / (n + 1)):.2f} | {elapsed:.1f} s |")
            hf, ar = storm["hot_first"], storm["arbitrary"]
            rows_storm.append(
                f"| {scheme} | {storm['hot_moved']:,} | {fmt_bytes(storm['hot_bytes'])} | "
                f"{storm['receivers']} | {fmt_bytes(storm['max_receiver_bytes'])} | "
                f"{fmt_s(storm['all_back_s'])} | {fmt_s(hf.get(0.5))} / {fmt_s(hf.get(0.9))} / "
                f"{fmt_s(hf.get(0.99))} | {fmt_s(ar.get(0.5))} / {fmt_s(ar.get(0.9))} / "
                f"{fmt_s(ar.get(0.99))} | {fmt_bytes(whole['hot_bytes'])} | "
                f"{fmt_s(whole['all_back_s'])} |")
        print("Load balance (max/mean per node):", file=out)
        print(file=out)
        print("| scheme | workspaces | bytes | requests | hot requests |", file=out)
        print("|---|---|---|---|---|", file=out)
        print("\n".join(rows_balance), file=out)
        print(file=out)
        print(f"Moves (ideal on failure: the failed node's workspaces and no more; on addition "
              f"{len(pop) / (n + 1):,.0f} = 1/(N+1)):", file=out)
        print(file=out)
        print("| scheme | on failed node | moved on failure | beyond the failed node's | "
              "moved on addition | addition / ideal | sim time |", file=out)
        print("|---|---|---|---|---|---|---|", file=out)
        print("\n".join(rows_moves), file=out)
        print(file=out)
        print("Hydration storm when the node with the most bytes fails (hot = resident workspaces "
              "that moved; times: until all are back, and until 50 / 90 / 99% of the failed node's "
              "hot request rate is served again; without tiering: every moved workspace, resident "
              "or not, is downloaded):", file=out)
        print(file=out)
        print("| scheme | hot moved | bytes | receivers | busiest receiver | all back | "
              "hot-first 50/90/99% | arbitrary order 50/90/99% | without tiering: bytes | "
              "without tiering: all back |", file=out)
        print("|---|---|---|---|---|---|---|---|---|---|", file=out)
        print("\n".join(rows_storm), file=out)
        print(file=out)
    print(f"(simulated in {time.monotonic() - started:.1f} s)", file=out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspaces", type=int, default=1_000_000)
    p.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[10, 50, 100], help="comma-separated node counts (default 10,50,100)")
    p.add_argument("--schemes", type=lambda s: s.split(","), default=list(DEFAULT_SCHEMES),
                   help="comma-separated, of: " + ", ".join(SCHEMES) + ", ring@V (default: "
                   + ",".join(DEFAULT_SCHEMES) + ")")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--vnodes", type=int, default=100, help="virtual nodes per node (ring, bounded)")
    p.add_argument("--balance-factor", type=float, default=1.10)
    p.add_argument("--bound-on", choices=("count", "requests", "bytes"), default="count")
    p.add_argument("--max-chunks", type=int, default=100_000)
    p.add_argument("--size-exp", type=float, default=0.7)
    p.add_argument("--activity-exp", type=float, default=1.0)
    p.add_argument("--hot-fraction", type=float, default=0.01)
    p.add_argument("--base-bytes", type=int, default=176 * KIB)
    p.add_argument("--bytes-per-chunk", type=int, default=5147)
    p.add_argument("--bandwidth-mbs", type=float, default=200.0,
                   help="download bandwidth per node from the object store, MB/s")
    p.add_argument("--latency-ms", type=float, default=50.0,
                   help="fixed cost per hydrated workspace (requests' first bytes, open), ms")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    for s in args.schemes:
        if not scheme_ok(s):
            p.error(f"unknown scheme {s!r}: choose among {', '.join(SCHEMES)}")
    if args.workspaces < 1 or any(n < 2 for n in args.nodes) or max(args.nodes) >= 65535:
        p.error("need at least 1 workspace and 2 to 65534 nodes")
    return args


if __name__ == "__main__":
    run(parse_args())
