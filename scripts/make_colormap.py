#!/usr/bin/python3
"""Writes src/maps/inferno.h: matplotlib's 'inferno' colour map (perceptually
uniform, readable in grey and by colour-blind viewers) as 256 RGB u8 entries.
Re-run: /usr/bin/python3 scripts/make_colormap.py (needs python3-matplotlib)."""
import os

import matplotlib
import numpy as np

cm = matplotlib.colormaps["inferno"] if hasattr(matplotlib, "colormaps") else matplotlib.cm.get_cmap("inferno")
rgb = np.round(cm(np.linspace(0, 1, 256))[:, :3] * 255).astype(int)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "maps", "inferno.h")
with open(out, "w") as f:
    f.write("/* matplotlib %s 'inferno' colour map, 256 x RGB u8 (made by scripts/make_colormap.py). */\n"
            % matplotlib.__version__)
    f.write("static const unsigned char DS_INFERNO[256][3] = {\n")
    for i in range(0, 256, 4):
        f.write("    " + " ".join("{%d, %d, %d}," % tuple(rgb[j]) for j in range(i, i + 4)) + "\n")
    f.write("};\n")
print("wrote", out)
