"""Slurm hostlist expressions: ``gpu[01-03,07],login1`` -> ``gpu01 gpu02 gpu03 gpu07 login1``.

The same expansion ``scontrol show hostnames`` does, without running it: comma-separated
names at the top level, each with any number of bracketed ranges (``rack[1-2]-n[01-02]`` is the
product, in Slurm's order), zero padding kept (``[08-10]`` -> ``08 09 10``). Duplicates are
kept, as Slurm keeps them. Slightly more lenient than ``scontrol``: text after the last bracket
(``n[1-2]x``) is accepted.
"""

from __future__ import annotations

__all__ = ["MAX_HOSTS", "HostlistError", "expand_hostlist"]

MAX_HOSTS = 65536          # more names than any rack has: a typo like [1-999999] stops here


class HostlistError(ValueError):
    """A malformed hostlist expression; the message quotes it and says what is wrong."""


def _split_top(expr: str) -> list[str]:
    """Split on the commas outside brackets."""
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f"hostlist {expr!r}: nested '['")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"hostlist {expr!r}: ']' without '['")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise HostlistError(f"hostlist {expr!r}: '[' without ']'")
    parts.append("".join(cur))
    return parts


def _range_values(body: str, expr: str) -> list[str]:
    """``01-03,07`` -> ``['01', '02', '03', '07']`` (the padding of the lower bound kept)."""
    out: list[str] = []
    for item in body.split(","):
        lo, sep, hi = item.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise HostlistError(f"hostlist {expr!r}: range {item!r} is not N or N-M "
                                "(decimal digits)")
        if not sep:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise HostlistError(f"hostlist {expr!r}: range {item!r} runs backwards")
        if int(hi) - int(lo) >= MAX_HOSTS:
            raise HostlistError(f"hostlist {expr!r}: range {item!r} has more than "
                                f"{MAX_HOSTS} names")
        width = len(lo) if lo.startswith("0") else 0
        out.extend(str(v).zfill(width) for v in range(int(lo), int(hi) + 1))
    return out


def _expand_one(name: str, expr: str) -> list[str]:
    prefixes = [""]
    rest = name
    while rest:
        i = rest.find("[")
        if i < 0:
            prefixes = [p + rest for p in prefixes]
            break
        j = rest.index("]", i)
        values = _range_values(rest[i + 1:j], expr)
        prefixes = [p + rest[:i] + v for p in prefixes for v in values]
        if len(prefixes) > MAX_HOSTS:
            raise HostlistError(f"hostlist {expr!r}: more than {MAX_HOSTS} names")
        rest = rest[j + 1:]
    return prefixes


def expand_hostlist(expr: str) -> tuple[str, ...]:
    """Every host name of a Slurm hostlist expression, in Slurm's order; ``""`` -> ``()``.

    Raises :class:`HostlistError` for unbalanced or nested brackets, a range that is not
    ``N`` or ``N-M`` in decimal digits, or a backwards range; empty names (``a,,b``) are
    skipped, as ``scontrol`` skips them.
    """
    if not isinstance(expr, str):
        raise HostlistError(f"hostlist {expr!r}: expected a string")
    expr = expr.strip()
    if not expr or expr == "(null)":
        return ()
    hosts: list[str] = []
    for part in _split_top(expr):
        part = part.strip()
        if not part:                 # "a,,b": scontrol skips the empty name too
            continue
        if any(c.isspace() for c in part):
            raise HostlistError(f"hostlist {expr!r}: white space inside {part!r}")
        hosts.extend(_expand_one(part, expr))
        if len(hosts) > MAX_HOSTS:
            raise HostlistError(f"hostlist {expr!r}: more than {MAX_HOSTS} names")
    return tuple(hosts)
