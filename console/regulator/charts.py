"""Server-side usage charts: matplotlib renders SVG (text kept as text, so the browser draws it in
the page's CJK font and a screen reader or a search finds it). No JavaScript, no build step.

Request threads draw at once: every chart is its own :class:`matplotlib.figure.Figure` (never
pyplot's global figures), and drawing happens inside :func:`drawing`, which holds one process-wide
lock around matplotlib's global settings (``rcParams``: a ``rc_context`` is a save-and-restore of
global state, so two at once undo each other) and its not thread-safe layout caches."""

from __future__ import annotations

import glob
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from console.regulator.index import UsagePoint

_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "DejaVu Sans", "sans-serif"]
#: The console's chart settings: text stays text in the CJK font list; stable ids (no date, fixed salt).
RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": _FONTS, "svg.hashsalt": "dcp-console"}
_DRAWING = threading.Lock()
_ready = False


def _setup() -> None:
    """matplotlib, at the first chart (not when a console is built: importing it and reading the CJK
    fonts takes seconds, which a node would otherwise spend before it answers): the Agg backend and
    Debian's fonts-noto-cjk registered by file (matplotlib's font cache may predate the package; the
    SVG keeps text as text and the browser picks the font, matplotlib needs one only to lay it out).
    Called under the drawing lock."""
    global _ready
    if _ready:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager

    for path in sorted(glob.glob("/usr/share/fonts/opentype/noto/NotoSansCJK-*.ttc")):
        font_manager.fontManager.addfont(path)
    _ready = True


@contextmanager
def drawing() -> Iterator[None]:
    """Draw one chart: the process's one drawing lock, and :data:`RC` in force (restored after)."""
    with _DRAWING:
        _setup()
        import matplotlib

        with matplotlib.rc_context(RC):
            yield


def svg_of(fig: Any) -> bytes:
    """``fig`` (a :class:`matplotlib.figure.Figure`) as SVG (inside :func:`drawing`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def usage_svg(
    series: Mapping[str, Sequence[UsagePoint]],
    metric: Literal["runs", "rows"],
    ylabel: str,
    empty_text: str,
    width: float = 9.0,
    height: float = 3.6,
) -> bytes:
    """A line chart of ``metric`` over time, one line per series (labelled by its key), as SVG."""
    with drawing():
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        if not series:
            ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            for label, points in series.items():
                xs = [p.start for p in points]
                ys = [p.runs if metric == "runs" else p.rows for p in points]
                ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, label=label)
            locator = AutoDateLocator(tz=next(iter(series.values()))[0].start.tzinfo)
            ax.xaxis.set_major_locator(locator)
            # numeric dates (no month names): the same in Chinese and English
            ax.xaxis.set_major_formatter(ConciseDateFormatter(
                locator, tz=locator.tz,
                formats=["%Y", "%m", "%d", "%H:%M", "%H:%M", "%S"],
                zero_formats=["", "%Y", "%m-%d", "%m-%d", "%H:%M", "%H:%M"],
                offset_formats=["", "%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d %H:%M"]))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(bottom=0)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), fontsize="small", frameon=False,
                      ncols=min(4, len(series)))
        return svg_of(fig)
