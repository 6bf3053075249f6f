#!/usr/bin/env python3
"""Model check of the Hopper forward's barrier protocol with per-warpgroup tile skipping.

The producer (load_fwd_sm90.cuh) and the two consumer warpgroups (mainloop_fwd_sm90.cuh, both
paths: the unchanged loop and the skipping one) as coroutines that issue exactly the kernel's
mbarrier waits / arrivals and named-barrier syncs / arrives, in random interleavings, with TMA
loads completing at random later steps. Checks: no deadlock; a stage is never loaded while a
warpgroup may still read it; a warpgroup passing a full barrier finds the tile it expects there,
loaded; every named-barrier phase has one sync and one arrive (256 threads: 128 + 128).
mbarrier parity as in hardware: wait(parity) passes iff the phase of that parity has completed,
i.e. iff completed_phases % 2 != parity. Run: python3 .notes/wgskip_protocol_model.py [trials].
"""
import random
import sys

K_STAGES, ITEM_SLOTS = 3, 3


class Hazard(Exception):
    pass


class MBarrier:
    def __init__(self, name, count):
        self.name, self.count, self.pending, self.phases = name, count, count, 0

    def arrive(self):
        self.pending -= 1
        if self.pending == 0:
            self.phases += 1
            self.pending = self.count

    def done(self, parity):
        return self.phases % 2 != parity


class NamedBarrier:
    """bar.sync / bar.arrive of 128 threads each, 256 per phase."""

    def __init__(self, name):
        self.name, self.arrived, self.syncing, self.phase = name, 0, 0, 0

    def add(self, sync):
        self.arrived += 1
        self.syncing += sync
        if self.arrived == 2:
            if self.syncing != 1:
                raise Hazard(f"{self.name}: a phase of {self.syncing} syncs and "
                             f"{2 - self.syncing} arrives")
            self.arrived = self.syncing = 0
            self.phase += 1


class World:
    def __init__(self, items, rng):
        self.rng, self.items = rng, items
        mb = MBarrier
        self.q_full, self.q_empty = mb("q_full", 1), mb("q_empty", 2)
        self.item_empty = [mb(f"item_empty{s}", 2) for s in range(ITEM_SLOTS)]
        self.k_full = [mb(f"k_full{s}", 1) for s in range(K_STAGES)]
        self.v_full = [mb(f"v_full{s}", 1) for s in range(K_STAGES)]
        self.k_empty = [mb(f"k_empty{s}", 2) for s in range(K_STAGES)]
        self.v_empty = [mb(f"v_empty{s}", 2) for s in range(K_STAGES)]
        self.named = [None, NamedBarrier("bar1"), NamedBarrier("bar2")]
        self.slot = [None] * ITEM_SLOTS
        # stage contents: (tile position, loaded) and the warpgroups that may read them
        self.k_tag = [None] * K_STAGES
        self.v_tag = [None] * K_STAGES
        self.k_readers = [set() for _ in range(K_STAGES)]
        self.v_readers = [set() for _ in range(K_STAGES)]
        self.q_readers = set()
        self.inflight = []  # pending TMA completions: callables

    # A TMA load into a stage: the stage must have no reader; completes later.
    def load(self, kind, s, t, bar):
        readers = self.k_readers if kind == "K" else self.v_readers
        tags = self.k_tag if kind == "K" else self.v_tag
        if readers[s]:
            raise Hazard(f"{kind} stage {s} loaded (tile {t}) while warpgroups {readers[s]} read it")
        tags[s] = (t, False)

        def complete():
            tags[s] = (t, True)
            bar.arrive()

        self.inflight.append(complete)


def producer(w):
    it = 0
    n_items = len(w.items)

    def plan(idx, j):
        yield lambda: w.item_empty[j % ITEM_SLOTS].done(((j // ITEM_SLOTS) & 1) ^ 1)
        w.slot[j % ITEM_SLOTS] = idx if idx < n_items else None

    yield from plan(0, 0)
    j = 0
    while j < n_items:
        n = w.items[j]["tiles"]

        def load_kv(tile):
            nonlocal it
            s, parity, t = it % K_STAGES, (it // K_STAGES) & 1, it
            it += 1
            yield lambda: w.k_empty[s].done(parity ^ 1)
            w.load("K", s, t, w.k_full[s])
            yield lambda: w.v_empty[s].done(parity ^ 1)
            w.load("V", s, t, w.v_full[s])

        early = min(n, K_STAGES - 1)
        for tile in range(early):
            yield from load_kv(tile)
        yield lambda: w.q_empty.done((j & 1) ^ 1)
        if w.q_readers:
            raise Hazard(f"Q loaded while {w.q_readers} read it")
        w.inflight.append(w.q_full.arrive)
        full = min(n, K_STAGES)
        for tile in range(early, full):
            yield from load_kv(tile)
        yield from plan(j + 1, j + 1)
        for tile in range(full, n):
            yield from load_kv(tile)
        j += 1
    yield lambda: w.q_empty.done((j & 1) ^ 1)
    w.q_full.arrive()


def consumer(w, wg, log):
    it = 0
    other = 1 - wg

    def sync():
        w.named[1 + wg].add(True)
        phase = w.named[1 + wg].phase
        arrived = w.named[1 + wg].arrived
        # blocks until this phase completes (the other warpgroup's arrive)
        if arrived != 0:
            yield lambda: w.named[1 + wg].phase > phase

    def arrive_other():
        w.named[2 - wg].add(False)

    def wait_k(s, parity, t):
        yield lambda: w.k_full[s].done(parity)
        if w.k_tag[s] != (t, True):
            raise Hazard(f"wg{wg} passed k_full[{s}] for tile {t}, stage holds {w.k_tag[s]}")
        w.k_readers[s].add(wg)

    def wait_v(s, parity, t):
        yield lambda: w.v_full[s].done(parity)
        if w.v_tag[s] != (t, True):
            raise Hazard(f"wg{wg} passed v_full[{s}] for tile {t}, stage holds {w.v_tag[s]}")
        w.v_readers[s].add(wg)

    def rel_k(s):
        w.k_readers[s].discard(wg)
        w.k_empty[s].arrive()

    def rel_v(s):
        w.v_readers[s].discard(wg)
        w.v_empty[s].arrive()

    if wg == 1:
        arrive_other()
    j = 0
    while True:
        yield lambda: w.q_full.done(j & 1)
        idx = w.slot[j % ITEM_SLOTS]
        if idx is None:
            break
        w.q_readers.add(wg)
        item = w.items[idx]
        n, visit = item["tiles"], item["visit"][wg]
        skips = not all(visit)
        if not skips:
            s = it % K_STAGES
            yield from wait_k(s, (it // K_STAGES) & 1, it)
            yield from sync()
            arrive_other()
            yield None  # the S GEMM runs
            rel_k(s)
            for tile in range(1, n):
                t = it + tile
                s, sp = t % K_STAGES, (t - 1) % K_STAGES
                yield from wait_k(s, (t // K_STAGES) & 1, t)
                yield from wait_v(sp, ((t - 1) // K_STAGES) & 1, t - 1)
                yield from sync()
                arrive_other()
                yield None
                rel_k(s)
                yield None  # softmax, P V completes
                rel_v(sp)
            w.q_readers.discard(wg)
            w.q_empty.arrive()
            t = it + n - 1
            sl = t % K_STAGES
            yield from wait_v(sl, (t // K_STAGES) & 1, t)
            yield from sync()
            arrive_other()
            yield None
            rel_v(sl)
        else:
            pending = False
            for tile in range(n):
                t = it + tile
                s, sp = t % K_STAGES, (t - 1) % K_STAGES
                parity, pp = (t // K_STAGES) & 1, ((t - 1) // K_STAGES) & 1
                v = visit[tile]
                yield from wait_k(s, parity, t)
                if v and pending:
                    yield from wait_v(sp, pp, t - 1)
                    yield from sync()
                    arrive_other()
                    yield None
                    rel_k(s)
                    yield None
                    rel_v(sp)
                elif v:
                    yield from sync()
                    arrive_other()
                    yield None
                    rel_k(s)
                else:
                    if pending:
                        yield from wait_v(sp, pp, t - 1)
                        yield from sync()
                        arrive_other()
                        yield None
                        rel_v(sp)
                    else:
                        yield from sync()
                        arrive_other()
                    rel_k(s)
                    yield from wait_v(s, parity, t)
                    rel_v(s)
                pending = v
            w.q_readers.discard(wg)
            w.q_empty.arrive()
            if pending:
                t = it + n - 1
                sl = t % K_STAGES
                yield from wait_v(sl, (t // K_STAGES) & 1, t)
                yield from sync()
                arrive_other()
                yield None
                rel_v(sl)
            else:
                yield from sync()
                arrive_other()
        it += n
        if w.slot[j % ITEM_SLOTS] != idx:
            raise Hazard(f"wg{wg}: item slot {j % ITEM_SLOTS} rewritten before its epilogue ended")
        log.append((wg, idx))
        w.item_empty[j % ITEM_SLOTS].arrive()
        j += 1


def random_items(rng):
    items = []
    for _ in range(rng.randint(1, 6)):
        spatial, extra = rng.randint(1, 9), rng.choice([0, 0, 1, 2])
        n = spatial + extra

        def pattern():
            kind = rng.random()
            if kind < 0.3:
                return [True] * n
            if kind < 0.4:  # padding only: no spatial tile
                return [False] * spatial + [True] * extra
            if kind < 0.7:  # a contiguous run (the kernel's split axis outermost)
                a = rng.randint(0, spatial - 1)
                b = rng.randint(a + 1, spatial)
                return [a <= i < b for i in range(spatial)] + [True] * extra
            return [rng.random() < 0.6 for _ in range(spatial)] + [True] * extra  # any sub-box

        items.append({"tiles": n, "visit": [pattern(), pattern()]})
    return items


def trial(seed):
    rng = random.Random(seed)
    items = random_items(rng)
    w = World(items, rng)
    log = []
    agents = {"producer": producer(w), "wg0": consumer(w, 0, log), "wg1": consumer(w, 1, log)}
    blocked = {name: None for name in agents}
    steps = 0
    while agents or w.inflight:
        steps += 1
        if steps > 200000:
            raise Hazard("no progress bound")
        runnable = [a for a in agents if blocked[a] is None or blocked[a]()]
        choices = runnable + (["tma"] if w.inflight else [])
        if not choices:
            raise Hazard("deadlock: " + ", ".join(agents))
        pick = rng.choice(choices)
        if pick == "tma":
            w.inflight.pop(rng.randrange(len(w.inflight)))()
            continue
        try:
            blocked[pick] = next(agents[pick])
        except StopIteration:
            del agents[pick]
    if sorted(log) != sorted((wg, i) for wg in (0, 1) for i in range(len(items))):
        raise Hazard(f"items finished: {log}")
    return len(items)


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    total = 0
    for seed in range(trials):
        try:
            total += trial(seed)
        except Hazard as e:
            print(f"seed {seed}: {e}")
            sys.exit(1)
    print(f"{trials} random schedules, {total} items: no deadlock, no hazard")


if __name__ == "__main__":
    main()
