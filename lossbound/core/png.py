"""PNG bytes from a matplotlib figure: the one encoder for MLflow artifacts and the report."""
from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["figure_png", "png_data_uri"]


def figure_png(fig: Any, *, dpi: int = 90) -> bytes:
    """``fig`` (a matplotlib Figure with a canvas) as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(fig: Any, *, dpi: int = 72) -> str:
    """``fig`` as a ``data:image/png;base64,...`` URI (a self-contained page embeds it)."""
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi=dpi)).decode()
