#!/usr/bin/env python3
"""Static check of wgmma register hazards in one kernel's SASS (cuobjdump -sass of one function).

Walks the SASS in address order (straight-line: no branch or loop modelling), tracks the HGMMAs
issued and not yet retired by a WARPGROUP.DEPBAR.LE gsb0, N, and reports any instruction that
writes a register of an in-flight HGMMA (accumulator or register-A fragment) and any STS that reads
one (PTX: accessing those registers before a wait_group covers the wgmma is undefined).
Written for the sm_90a dK/dV kernel review (session 5); usage:
  cuobjdump -sass x.o > x.sass   # then cut out one Function's lines
  python3 .notes/sass_wgmma_hazards.py one_function.sass
"""
import re
import sys


def reg(tok):
    m = re.match(r"R(\d+)", tok)
    return int(m.group(1)) if m else None


NO_DEST = re.compile(r"(ST|RED|BAR|BRA|WARPGROUP|FENCE|MEMBAR|LDGDEPBAR|DEPBAR|ATOM|LDGSTS|"
                     r"ISETP|FSETP|U[A-Z]|R2UR|WARPSYNC|NOP|PLOP|BSSY|BSYNC|EXIT)")
groups, open_group, writes, reads = [], [], 0, 0
for line in open(sys.argv[1]):
    m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
    if not m:
        continue
    addr, body = m.group(1), m.group(2).strip()
    if body.startswith("@"):
        body = body.split(None, 1)[1]
    op, _, rest = body.partition(" ")
    toks = [t.strip() for t in rest.split(",")] if rest else []
    if op.startswith("HGMMA"):
        n = int(re.search(r"64x(\d+)x", op).group(1))
        live = set(range(reg(toks[0]), reg(toks[0]) + n // 2))  # fp32 accumulators
        if reg(toks[1]) is not None:
            live |= set(range(reg(toks[1]), reg(toks[1]) + 4))  # register A fragment
        open_group.append(live)
        if "gsb0" in body:
            groups.append(open_group)
            open_group = []
        continue
    m = re.match(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x([0-9a-f]+)", body)
    if m:
        del groups[:max(0, len(groups) - int(m.group(1), 16))]
        continue
    live = set().union(*[s for g in groups + [open_group] for s in g]) if (groups or open_group) else set()
    if not live or not toks:
        continue
    if op.startswith("STS") and any(reg(t) in live for t in toks[1:] if reg(t) is not None):
        reads += 1
        print("read of an in-flight wgmma register:", addr, body)
    if not NO_DEST.match(op) and reg(toks[0]) is not None:
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        if set(range(reg(toks[0]), reg(toks[0]) + width)) & live:
            writes += 1
            print("write of an in-flight wgmma register:", addr, body)
print(f"{writes} writes, {reads} STS reads of in-flight wgmma registers")
