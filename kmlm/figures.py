"""What kmlm's token figures share: matplotlib without a display, fonts that cover the
tokens drawn, and writing the picture whole or not at all."""

import contextlib
import functools
import os
import warnings

from kmlm.files import replace_atomically

# Fonts with CJK glyphs, tried after DejaVu Sans (matplotlib falls back glyph by glyph).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "AR PL UMing CN", "Droid Sans Fallback", "SimHei", "Microsoft YaHei",
             "PingFang SC")


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def font_families():
    """DejaVu Sans, then the installed fonts of `CJK_FONTS`."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    if not installed.intersection(CJK_FONTS):
        installed |= _fonts_missing_from_the_cache()
    return ["DejaVu Sans"] + [name for name in CJK_FONTS if name in installed]


@functools.cache
def _fonts_missing_from_the_cache():
    """Adds the system fonts that matplotlib's font cache lacks (a font installed after the
    cache was built, e.g. apt-get install fonts-wqy-microhei) and returns their names."""
    from matplotlib import font_manager

    known = {font.fname for font in font_manager.fontManager.ttflist}
    names = set()
    for path in font_manager.findSystemFonts():
        if path in known:
            continue
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError):  # a font file matplotlib cannot read: skip it
            continue
        names.add(font_manager.FontProperties(fname=path).get_name())
    return names


@contextlib.contextmanager
def token_fonts():
    """A matplotlib context whose text falls back to a CJK font when one is installed;
    without one, CJK tokens are drawn as boxes (and matplotlib's warning per glyph is muted)."""
    plt = pyplot()
    with plt.rc_context({"font.family": font_families()}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield plt


def require_output_folder(path):
    """Raises a one-line FileNotFoundError when the directory that would hold `path` does not exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the directory {folder!r} does not exist")


def save_png(figure, path):
    """Writes `figure` to `path` as PNG through a temporary file and a rename, then closes it."""
    require_output_folder(path)
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    pyplot().close(figure)
