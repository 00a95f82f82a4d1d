"""Head pose: MediaPipe's face transform <-> (pitch, yaw, roll), and rotation matrices in torch.

Image axes throughout: x right, y down, z into the scene (away from the camera).
R = Rz(roll) @ Ry(-yaw) @ Rx(pitch) with right-handed elementary rotations, which
gives the signs of :mod:`dystream.motion`: positive pitch moves the chin back
(chin down), positive yaw moves the nose to the image's right, positive roll turns
the face clockwise on screen.
"""

from __future__ import annotations

import numpy as np
import torch

# OpenGL camera axes (y up, z towards the viewer) -> image axes (y down, z away).
_FLIP = np.diag([1.0, -1.0, -1.0])


def angles_from_transform(transform: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in radians from the landmarker's 4x4 face-to-camera matrix."""
    rot = np.asarray(transform, np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(rot)  # drop any scale the matrix carries
    rot = _FLIP @ (u @ vt) @ _FLIP
    # Decompose R = Rz(roll) Ry(b) Rx(pitch), b = -yaw.
    b = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rot[2, 1], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[0, 0])
    return float(pitch), float(-b), float(roll)


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotations in image axes for angles of any (equal) leading shape."""
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cy, sy = torch.cos(-yaw), torch.sin(-yaw)
    cr, sr = torch.cos(roll), torch.sin(roll)
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).unflatten(-1, (3, 3))
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).unflatten(-1, (3, 3))
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).unflatten(-1, (3, 3))
    return rz @ ry @ rx
