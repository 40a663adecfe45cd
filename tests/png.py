"""A small PNG reader for the screenshots the tests take (8-bit RGB or RGBA, not interlaced,
as Chromium writes them): the pixels, to look for the colours a page must show."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> tuple[int, int, list[bytearray], int]:
    """(width, height, rows of bytes, bytes per pixel)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    offset, idat, header = 8, b"", None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    if header is None:
        raise ValueError(f"{path} has no IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit RGB/RGBA, not interlaced (got {header})")
    pixel = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * pixel
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - pixel] if x >= pixel else 0
            up = previous[x]
            corner = previous[x - pixel] if x >= pixel else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[x] = (line[x] + _paeth(left, up, corner)) & 0xFF
        rows.append(line)
        previous = line
    return width, height, rows, pixel


def colours(path: Path) -> dict[bytes, int]:
    """Pixels per colour (RGB bytes), for every colour the image has."""
    width, _, rows, pixel = read_png(path)
    counts: dict[bytes, int] = {}
    for line in rows:
        for x in range(0, width * pixel, pixel):
            key = bytes(line[x : x + 3])
            counts[key] = counts.get(key, 0) + 1
    return counts


def rows_with(path: Path, hex_colour: str) -> list[int]:
    """The rows (from the top) that have a pixel of this colour (#rrggbb)."""
    wanted = bytes.fromhex(hex_colour.lstrip("#"))
    width, _, rows, pixel = read_png(path)
    return [
        y
        for y, line in enumerate(rows)
        if any(line[x : x + 3] == wanted for x in range(0, width * pixel, pixel))
    ]
