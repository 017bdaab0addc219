"""Tables for the commands' output: never cut a cell, plain text outside a terminal.

A rich table fitted to an 80-column pipe (rich's width when stdout is not a
terminal) ellipsizes names (``sa82…``), so ``edgevlm targets | grep sa8295p``
found nothing.  In a terminal the table is rich, the first (name) column
never wraps, other cells wrap between words only, and the console is widened
when the terminal is too narrow for that; elsewhere it is plain aligned text, one row a line,
that grep, awk and CI logs read as is.
"""
import sys


def is_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def print_table(title: str, columns, rows, caption: str | None = None, right=()) -> None:
    """Print ``rows`` (sequences of str, one per column) under ``columns``; ``right``: columns aligned right."""
    rows = [[str(c) for c in row] for row in rows]
    if is_terminal():
        _print_rich(title, columns, rows, caption, set(right))
    else:
        print(plain_table(title, columns, rows, caption, set(right)), flush=True)


def plain_table(title, columns, rows, caption=None, right=()) -> str:
    """Aligned text: title line, header, rows, caption; columns two spaces apart, nothing cut."""
    widths = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(columns)]

    def line(cells):
        out = [c.rjust(w) if col in right else c.ljust(w) for c, w, col in zip(cells, widths, columns)]
        return "  ".join(out).rstrip()

    lines = ([title] if title else []) + [line(columns)] + [line(r) for r in rows]
    return "\n".join(lines + ([caption] if caption else []))


def _print_rich(title, columns, rows, caption, right):
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=caption)
    # Each column at least as wide as its longest word (the name column: its longest cell),
    # so cells wrap between words and are never cut.
    need = 1
    for i, col in enumerate(columns):
        cells = [col] + [r[i] for r in rows]
        width = max(len(w) for c in cells for w in ([c] if i == 0 else c.split() or [""]))
        table.add_column(col, justify="right" if col in right else "left", no_wrap=i == 0, min_width=width)
        need += width + 3  # padding on both sides and one border
    for row in rows:
        table.add_row(*(Text(c) for c in row))  # names are text, never rich markup
    console = Console()
    if need > console.width:
        console = Console(width=need)
    console.print(table)
