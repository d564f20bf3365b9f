"""The Shapes world: the 8 primitives, the 8 colors and their exact sizes (see DESIGN.md).

Frame: Y up, units of the [-1, 1]^3 box, every shape centered at the origin. "Centered" means
the bounding box is centered, so the apex shapes are not centered on their centroid:
- `cone`: base radius 0.55 on y = -0.55, apex at y = +0.55 (height 1.1);
- `pyramid`: square base of side 1.0 on y = -0.5 with edges along X and Z
  (x, z in [-0.5, 0.5]), apex at y = +0.5 (height 1.0).
The solids of revolution (sphere, cylinder, cone, torus, capsule, snowman) have Y as axis.
"""
from __future__ import annotations

import math

SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "capsule", "snowman")

# Rotational symmetry order about Y of each primitive: under an orbiting camera with the light
# at the camera, its image depends on the azimuth modulo 360 / order only. None: a solid of
# revolution, whose image does not depend on the azimuth at all.
AZIMUTH_SYMMETRY: dict[str, int | None] = {
    "sphere": None, "cube": 4, "cylinder": None, "cone": None,
    "torus": None, "pyramid": 4, "capsule": None, "snowman": None,
}

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.70, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.15, 0.30, 0.90),
    "purple": (0.55, 0.20, 0.75),
    "pink": (0.95, 0.45, 0.70),
}

# Sizes in world units (radii, full heights, sides).
SPHERE_RADIUS = 0.6
CUBE_SIDE = 1.0
CYLINDER_RADIUS, CYLINDER_HEIGHT = 0.45, 1.1
CONE_RADIUS, CONE_HEIGHT = 0.55, 1.1
TORUS_MAJOR_RADIUS, TORUS_MINOR_RADIUS = 0.5, 0.18
PYRAMID_SIDE, PYRAMID_HEIGHT = 1.0, 1.0
CAPSULE_RADIUS, CAPSULE_HEIGHT = 0.35, 1.3
# Snowman: (center y, radius) of the bottom and the top sphere, both on the Y axis.
SNOWMAN_SPHERES = ((-0.3, 0.4), (0.35, 0.28))


def _snowman_crease() -> tuple[float, float]:
    """(y, rho) of the circle where the snowman's two spheres meet."""
    (y0, r0), (y1, r1) = SNOWMAN_SPHERES
    d = y1 - y0
    a = (d * d + r0 * r0 - r1 * r1) / (2 * d)  # from the bottom center up to the crease plane
    return y0 + a, math.sqrt(r0 * r0 - a * a)


SNOWMAN_CREASE_Y, SNOWMAN_CREASE_RHO = _snowman_crease()


def check_shape(name: str) -> str:
    """Returns `name` if it is one of `SHAPES`, else raises a ValueError listing them."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    return name


def check_color(name: str) -> str:
    """Returns `name` if it is one of `COLORS`, else raises a ValueError listing them."""
    if name not in COLORS:
        raise ValueError(f"unknown color {name!r}; choose one of {', '.join(COLORS)}")
    return name


def _snowman_caps() -> tuple[float, float]:
    """Heights of the caps of the bottom and the top sphere that lie inside the other sphere."""
    (y0, r0), (y1, r1) = SNOWMAN_SPHERES
    return r0 - (SNOWMAN_CREASE_Y - y0), r1 - (y1 - SNOWMAN_CREASE_Y)


_PI = math.pi
_CAPSULE_SIDE = CAPSULE_HEIGHT - 2 * CAPSULE_RADIUS  # length of the cylindrical part
_SNOWMAN_PARTS = [(r, h) for (_, r), h in zip(SNOWMAN_SPHERES, _snowman_caps())]  # (radius, hidden cap)
_VOLUMES = {
    "sphere": 4 / 3 * _PI * SPHERE_RADIUS**3,
    "cube": CUBE_SIDE**3,
    "cylinder": _PI * CYLINDER_RADIUS**2 * CYLINDER_HEIGHT,
    "cone": _PI * CONE_RADIUS**2 * CONE_HEIGHT / 3,
    "torus": 2 * _PI**2 * TORUS_MAJOR_RADIUS * TORUS_MINOR_RADIUS**2,
    "pyramid": PYRAMID_SIDE**2 * PYRAMID_HEIGHT / 3,
    "capsule": _PI * CAPSULE_RADIUS**2 * _CAPSULE_SIDE + 4 / 3 * _PI * CAPSULE_RADIUS**3,
    # A sphere cap of height h has volume pi h^2 (3r - h) / 3.
    "snowman": sum(4 / 3 * _PI * r**3 - _PI * h * h * (3 * r - h) / 3 for r, h in _SNOWMAN_PARTS),
}
_AREAS = {
    "sphere": 4 * _PI * SPHERE_RADIUS**2,
    "cube": 6 * CUBE_SIDE**2,
    "cylinder": 2 * _PI * CYLINDER_RADIUS * (CYLINDER_HEIGHT + CYLINDER_RADIUS),
    "cone": _PI * CONE_RADIUS * (CONE_RADIUS + math.hypot(CONE_RADIUS, CONE_HEIGHT)),
    "torus": 4 * _PI**2 * TORUS_MAJOR_RADIUS * TORUS_MINOR_RADIUS,
    "pyramid": PYRAMID_SIDE**2 + 2 * PYRAMID_SIDE * math.hypot(PYRAMID_SIDE / 2, PYRAMID_HEIGHT),
    "capsule": 2 * _PI * CAPSULE_RADIUS * _CAPSULE_SIDE + 4 * _PI * CAPSULE_RADIUS**2,
    # A sphere cap of height h has area 2 pi r h.
    "snowman": sum(4 * _PI * r * r - 2 * _PI * r * h for r, h in _SNOWMAN_PARTS),
}


def shape_volume(name: str) -> float:
    """Exact enclosed volume of primitive `name`, in world units^3."""
    return _VOLUMES[check_shape(name)]


def shape_area(name: str) -> float:
    """Exact surface area of primitive `name` (the union's outer surface for the snowman), in world units^2."""
    return _AREAS[check_shape(name)]
