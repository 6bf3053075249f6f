"""Argument normalization and the framework-independent checks of fna's Python API.

Every message starts with the function (``fna.na2d: ...``), names the argument, its value and the
rule, like the C++ library's messages do.
"""

_AXES = {1: "X", 2: "X, Y", 3: "X, Y, Z"}


def layout(rank, heads="heads", dim="head_dim"):
    return f"[B, {_AXES[rank]}, {heads}, {dim}]"


def per_axis(fn, name, value, rank, kind):
    """An int (or bool) for every axis, or a tuple/list with one per axis -> list of `kind`."""
    def ok(x):
        if kind is bool:
            return isinstance(x, bool) or type(x).__name__ == "bool_"
        return isinstance(x, int) and not isinstance(x, bool) or type(x).__name__.startswith("int")

    what = "a bool or a tuple of bools" if kind is bool else "an int or a tuple of ints"
    if isinstance(value, (tuple, list)):
        if len(value) != rank or not all(ok(x) for x in value):
            raise ValueError(
                f"fna.{fn}: {name} = {value!r}: expected {what}, one per spatial axis "
                f"({rank} for {fn})")
        return [kind(x) for x in value]
    if not ok(value):
        raise ValueError(f"fna.{fn}: {name} = {value!r}: expected {what} (one per spatial axis)")
    return [kind(value)] * rank


def check_backend(fn, backend, choices):
    if backend is None:
        return "auto"
    if not isinstance(backend, str) or backend not in choices:
        raise ValueError(
            f"fna.{fn}: backend = {backend!r}: expected None or one of {', '.join(choices)}")
    return backend


def check_scale(fn, scale):
    if scale is None:
        return None
    try:
        return float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"fna.{fn}: scale = {scale!r}: expected a float or None") from None


def check_additional(fn, additional_keys, additional_values):
    if (additional_keys is None) != (additional_values is None):
        given, missing = (("additional_keys", "additional_values") if additional_values is None
                          else ("additional_values", "additional_keys"))
        raise ValueError(f"fna.{fn}: {given} was given without {missing}: pass both or neither")


def check_tensors(fn, rank, named, dtype_of, device_of, supported_dtypes, hint):
    """Rank, dtype and device agreement of (name, shape, strides, array) tuples; q comes first.

    dtype_of returns a comparable dtype object, supported_dtypes maps those to display names.
    """
    qname, _, _, q = named[0]
    q_dtype, q_device = dtype_of(q), device_of(q)
    for name, shape, strides, x in named:
        additional = name.startswith("additional")
        want = 4 if additional else rank + 3
        if len(shape) != want:
            dim = "head_dim_v" if name.endswith("values") or name == "value" else "head_dim"
            lay = (f"[B, n_additional, heads_kv, {dim}]" if additional
                   else layout(rank, "heads_kv" if name in ("key", "value") else "heads", dim))
            raise ValueError(
                f"fna.{fn}: {name} has shape {tuple(shape)} (rank {len(shape)}): {fn} expects "
                f"{name} as {lay} (rank {want})")
        dtype = dtype_of(x)
        if dtype not in supported_dtypes:
            raise TypeError(
                f"fna.{fn}: {name} has dtype {str(dtype).replace('torch.', '')}: fna takes "
                f"{', '.join(supported_dtypes.values())}{hint}")
        if dtype != q_dtype:
            raise TypeError(
                f"fna.{fn}: {name} has dtype {supported_dtypes[dtype]} but {qname} has "
                f"{supported_dtypes[q_dtype]}: all inputs must share one dtype")
        if device_of(x) != q_device:
            raise ValueError(
                f"fna.{fn}: {name} is on {device_of(x)} but {qname} is on {q_device}: all "
                f"inputs must be on one device")
        if shape[-1] > 1 and strides[-1] != 1:
            raise ValueError(
                f"fna.{fn}: {name} has strides {tuple(strides)}: the last dimension must be "
                f"contiguous (stride 1); other strides are free (pass a .contiguous() copy)")
