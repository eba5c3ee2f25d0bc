"""Word geometry: any annotated region cropped to an upright rectangle by a perspective warp (numpy and Pillow only).

Coordinates are in pixels with ``(0, 0)`` at the top-left corner of the image and ``y`` pointing down; "clockwise"
means clockwise as seen on screen. A quadrilateral is warped so that its first point becomes the crop's top-left
corner and the next ones, clockwise, its top-right, bottom-right and bottom-left corners: annotations that start at
the top-left corner of the text in its own orientation give upright crops even for rotated text (TextOCR documents
this order; COCO-Text's API names its polygon's points tl, tr, br, bl; MLT19 gives its corners clockwise). A polygon
with more points (curved text) is replaced by its minimum-area rotated rectangle, started at the corner nearest the
polygon's first point.
"""

from typing import Tuple, Union

import numpy as np
from PIL import Image

from strhub.data.converters.base import DEGENERATE, OUTSIDE

ROTATIONS = ('none', 'cw', 'ccw')


def signed_area(points: np.ndarray) -> float:
    """Shoelace area of an ``(N, 2)`` polygon: positive when its points run clockwise on screen."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])  # np.cross of 2-vectors is deprecated in NumPy 2


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull of ``(N, 2)`` points (Andrew's monotone chain), without collinear points."""
    pts = np.unique(points, axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-1] - out[-2], p - out[-2]) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """The 4 corners of the smallest-area rectangle, of any rotation, holding ``(N, 2)`` points.

    One side of that rectangle lies along an edge of the convex hull, so only the hull's edge directions are tried.
    """
    hull = convex_hull(points)
    if len(hull) < 3:  # collinear: a zero-area rectangle along the points
        hull = np.unique(points, axis=0)
    edges = np.roll(hull, -1, axis=0) - hull
    best = None
    for angle in np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)):
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, s], [-s, c]])  # rotates by -angle: this edge direction becomes the x axis
        p = hull @ rot.T
        lo, hi = p.min(axis=0), p.max(axis=0)
        area = float(np.prod(hi - lo))
        if best is None or area < best[0]:
            best = (area, lo, hi, rot)
    _, lo, hi, rot = best
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    return corners @ rot  # rotated back (rot is orthogonal: its inverse is its transpose)


def order_clockwise(quad: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The 4 points of ``quad`` clockwise around their centre, starting with the one nearest ``start``.

    Annotations given counter-clockwise would otherwise be mirrored by the warp, and self-crossing ones (corners in
    the wrong order) twisted.
    """
    centre = quad.mean(axis=0)
    quad = quad[np.argsort(np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0]))]  # clockwise as y is down
    first = int(np.argmin(((quad - start) ** 2).sum(axis=1)))
    return np.roll(quad, -first, axis=0)


def word_quad(points: np.ndarray) -> np.ndarray:
    """The quadrilateral to crop for an annotated polygon: its own 4 points, or for more (or fewer) points their
    minimum-area rectangle; clockwise from the point (or corner) nearest the annotation's first point."""
    quad = points if len(points) == 4 else min_area_rect(points)
    return order_clockwise(quad, points[0])


def perspective_coefficients(quad: np.ndarray, width: int, height: int) -> Tuple[float, ...]:
    """Pillow's 8 PERSPECTIVE coefficients mapping the ``width x height`` output onto ``quad`` (tl, tr, br, bl).

    Raises:
        numpy.linalg.LinAlgError: the quad is degenerate (no such mapping).
    """
    dst = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(dst, quad)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return tuple(np.linalg.solve(a, b))


def crop_word(image: Image.Image, points: np.ndarray) -> Union[Image.Image, str]:
    """The region ``points`` of ``image`` warped to an upright rectangle, or why it cannot be cropped.

    The polygon is first clipped to the image (a point outside is moved to the nearest border), so that a box that
    overhangs the border is not padded with black, which a recogniser would learn as part of the word.

    Returns:
        The crop (its width and height are the longer of the quad's opposite sides, rounded), or
        :data:`~strhub.data.converters.base.OUTSIDE` when the region misses the image, or
        :data:`~strhub.data.converters.base.DEGENERATE` when it has (nearly) no area.
    """
    w, h = image.size
    lo, hi = points.min(axis=0), points.max(axis=0)
    if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= w or lo[1] >= h:
        return OUTSIDE
    quad = word_quad(np.clip(points, 0, [w, h]))
    width = round(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3])))
    height = round(max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])))
    if width < 1 or height < 1 or abs(signed_area(quad)) < 1:
        return DEGENERATE
    try:
        coefficients = perspective_coefficients(quad, width, height)
    except np.linalg.LinAlgError:
        return DEGENERATE
    return image.transform((width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)


def rotate_vertical(crop: Image.Image, rotation: str, ratio: float) -> Tuple[Image.Image, bool]:
    """``crop`` turned by 90 degrees (``rotation`` 'cw' or 'ccw') when it is more than ``ratio`` times taller than
    wide; unchanged for 'none' or a crop that is not that tall. Returns the image and whether it was turned.

    'ccw' makes horizontal the text that reads top to bottom (a horizontal word turned clockwise), 'cw' the text that
    reads bottom to top. Text whose letters are stacked upright stays unreadable either way.
    """
    if rotation not in ROTATIONS:
        raise ValueError(f'rotation must be one of {ROTATIONS}, got {rotation!r}')
    if rotation == 'none' or crop.height <= ratio * crop.width:
        return crop, False
    return crop.transpose(Image.Transpose.ROTATE_270 if rotation == 'cw' else Image.Transpose.ROTATE_90), True
