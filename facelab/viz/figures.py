"""A guard against empty axes in the book's figures.

A figure created twice by mistake (a repeated ``plt.subplots``) is shown as a frame of empty
axes above the real one. :func:`check_figures` finds such axes in the open figures;
:func:`watch_figures` runs it every time a notebook calls ``plt.show()``, so that the chapter
stops with an error instead of publishing the empty frame.
"""

from __future__ import annotations


def _axes_is_empty(ax) -> bool:
    # Anything drawn counts: lines, images, patches (bars), collections (scatter, colour bars),
    # texts, tables, and artists added by hand. A 3D axes has its own data flag.
    return not (ax.has_data() or ax.lines or ax.images or ax.patches or ax.collections or ax.texts
                or ax.tables or ax.artists or ax.get_legend() is not None)


def empty_axes(figures=None) -> list[str]:
    """Descriptions of the visible, framed axes that hold no artist, e.g. ``["figure 1, axes 2 of 5"]``.

    Args:
        figures: matplotlib ``Figure`` objects (default: every open pyplot figure).
    """
    import matplotlib.pyplot as plt

    if figures is None:
        figures = [plt.figure(n) for n in plt.get_fignums()]
    found = []
    for k, fig in enumerate(figures, 1):
        label = f"figure {fig.number}" if getattr(fig, "number", None) is not None else f"figure {k}"
        axes = fig.get_axes()
        for i, ax in enumerate(axes, 1):
            # An axes switched off (``ax.axis("off")``) is blank space, e.g. the unused cells
            # of an image grid; a frame with ticks and nothing in it is the mistake.
            if ax.get_visible() and ax.axison and _axes_is_empty(ax):
                title = f" ({ax.get_title()!r})" if ax.get_title() else ""
                found.append(f"{label}, axes {i} of {len(axes)}{title}")
    return found


def check_figures(figures=None) -> None:
    """Raise ``ValueError`` if a figure has visible axes with a frame and nothing drawn in them.

    Axes hidden on purpose (``ax.set_visible(False)``, ``ax.remove()``, or ``ax.axis("off")``
    as for the unused cells of an image grid) are fine.

    Args:
        figures: matplotlib ``Figure`` objects (default: every open pyplot figure).

    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> fig, axes = plt.subplots(1, 2); _ = axes[0].plot([0, 1])
    >>> check_figures([fig])
    Traceback (most recent call last):
    ...
    ValueError: figures: empty axes in figure ..., axes 2 of 2
    >>> _ = axes[1].imshow([[0, 1]]); check_figures([fig]); plt.close(fig)
    """
    if found := empty_axes(figures):
        raise ValueError("figures: empty axes in " + "; ".join(found))


def watch_figures() -> None:
    """Make ``matplotlib.pyplot.show`` call :func:`check_figures` first (once per process).

    Chapters call this in their setup cell; calling it again does nothing.

    >>> import matplotlib.pyplot as plt
    >>> watch_figures(); watch_figures(); plt.show.__name__
    'show'
    >>> getattr(plt.show, "_facelab_checks_figures", False)
    True
    """
    import functools

    import matplotlib.pyplot as plt

    if getattr(plt.show, "_facelab_checks_figures", False):
        return
    original = plt.show

    @functools.wraps(original)
    def show(*args, **kwargs):
        check_figures()
        return original(*args, **kwargs)

    show._facelab_checks_figures = True
    plt.show = show
