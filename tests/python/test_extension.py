"""The compiled extension links no framework: its ELF DT_NEEDED entries hold no libtorch/libc10."""

import struct

import fna
import fna._C


def needed_libraries(path):
    """DT_NEEDED names of an ELF64 little-endian shared object (a small reader, no pyelftools)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "expected ELF64 LE"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, ...
        _, sh_type, _, _, off, size, link = struct.unpack_from("<IIQQQQI", data,
                                                               shoff + i * shentsize)
        sections.append((sh_type, off, size, link))
    names = []
    for sh_type, off, size, link in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab_off = sections[link][1]
        for j in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, off + j)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_off + val)
                names.append(data[strtab_off + val:end].decode())
    return names


def test_extension_does_not_link_torch():
    needed = needed_libraries(fna._C.__file__)
    assert needed, "no DT_NEEDED entries found: the ELF reader is broken"
    assert any(n.startswith("libc.so") for n in needed), needed
    bad = [n for n in needed if "torch" in n or "c10" in n or "python" in n.lower()]
    assert not bad, f"fna._C links {bad}: the extension must not depend on a framework"


def test_backends_listed():
    assert "reference" in fna.compiled_backends()
    assert "reference" in fna.available_backends("cpu")
    assert fna.__version__
