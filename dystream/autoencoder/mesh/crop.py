"""Square face crop around the landmarks, and pasting an animated crop back into the photo."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dystream.autoencoder.mesh.window import Windows, every_frame
from dystream.errors import InputError

CROP_SCALE = 1.6          # crop side / larger side of the landmark box (as the paper's crops)
MIN_FACE_PIXELS = 48      # smaller faces carry too little detail to animate


@dataclass(frozen=True)
class CropBox:
    """Square crop in photo pixels: top-left corner (may lie outside the photo) and side."""

    x0: float
    y0: float
    side: float

    @classmethod
    def around(cls, landmarks: np.ndarray, scale: float = CROP_SCALE) -> "CropBox":
        x0, y0 = landmarks[:, :2].min(axis=0)
        x1, y1 = landmarks[:, :2].max(axis=0)
        side = scale * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return cls(float(cx - side / 2), float(cy - side / 2), float(side))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels -> crop units ([0, 1] across the crop); z is scaled alike."""
        out = np.array(points, np.float32, copy=True)
        out[:, 0] -= self.x0
        out[:, 1] -= self.y0
        return out / self.side


def cut(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The crop resampled to size x size (bilinear), border pixels repeated outside the photo."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    height, width = image.shape[:2]
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size * box.side
    xs = (box.x0 + centres) / width * 2 - 1
    ys = (box.y0 + centres) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None].float()
    # Antialias when shrinking: blur by resizing first to about the crop's resolution.
    shrink = box.side / size
    if shrink > 1.5:
        tensor = F.interpolate(tensor, scale_factor=1 / shrink, mode="area")
    out = F.grid_sample(tensor, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def region_grid(box: CropBox, row0: int, row1: int, col0: int, col1: int) -> torch.Tensor:
    """[h, w, 2]: where the photo pixels rows row0..row1, cols col0..col1 sit inside the
    crop, in grid_sample units (x, y)."""
    xs = ((torch.arange(col0, col1, dtype=torch.float64) + 0.5) - box.x0) / box.side * 2 - 1
    ys = ((torch.arange(row0, row1, dtype=torch.float64) + 0.5) - box.y0) / box.side * 2 - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1).float()


def feather_alpha(grid: torch.Tensor, feather: float) -> torch.Tensor:
    """[1, h, w] weight of the crop over the photo: 1 inside, easing to 0 over the outer
    ``feather`` of the crop (half-width units), 0 outside it."""
    edge = torch.minimum(1 - grid.abs()[..., 0], 1 - grid.abs()[..., 1]) / 2
    return ((edge / feather).clamp(0, 1) ** 2 * (3 - 2 * (edge / feather).clamp(0, 1)))[None]


class PasteBack:
    """Puts rendered crops into the full photo with a feathered edge (precomputed per photo).

    The decoder keeps the crop border still, so feathering over the outer band of the
    crop hides the seam.
    """

    def __init__(self, photo: np.ndarray, box: CropBox, feather: float = 0.08):
        self.photo = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1).float()
        self.box, self.feather = box, feather
        height, width = photo.shape[:2]
        self.x0 = max(int(np.floor(box.x0)), 0)
        self.y0 = max(int(np.floor(box.y0)), 0)
        self.x1 = min(int(np.ceil(box.x0 + box.side)), width)
        self.y1 = min(int(np.ceil(box.y0 + box.side)), height)
        self.grid = region_grid(box, self.y0, self.y1, self.x0, self.x1)
        self.alpha = feather_alpha(self.grid, feather)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "PasteBack":
        """On ``device``, and in the crops' float type ``dtype`` when given (the appearance's:
        an autoencoder built with dtype=torch.float64 renders float64 crops)."""
        self.photo, self.grid, self.alpha = (t.to(device, dtype) for t in (self.photo, self.grid, self.alpha))
        return self

    def region(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [T, 3, S, S] float -> the blended crop region of the photo [T, 3, h, w] float."""
        frames = crops.shape[0]
        region = F.grid_sample(crops, self.grid[None].expand(frames, -1, -1, -1),
                               mode="bilinear", padding_mode="border", align_corners=False)
        under = self.photo[None, :, self.y0:self.y1, self.x0:self.x1]
        return under + self.alpha * (region - under)

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [T, 3, S, S] float 0..255 -> photos [T, 3, H, W] float."""
        out = self.photo[None].expand(crops.shape[0], -1, -1, -1).clone()
        out[:, :, self.y0:self.y1, self.x0:self.x1] = self.region(crops)
        return out

    def to_uint8(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [T, 3, S, S] float -> photos [T, H, W, 3] uint8; only the crop region is
        rounded and written, the rest is a byte copy of the photo (cheaper per frame)."""
        if not hasattr(self, "_photo_bytes") or self._photo_bytes.device != crops.device:
            self._photo_bytes = self.photo.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        out = self._photo_bytes[None].expand(crops.shape[0], -1, -1, -1).clone()
        region = self.region(crops).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        out[:, self.y0:self.y1, self.x0:self.x1] = region
        return out


class PasteBatch:
    """Paste-backs of frames of B photos of one size in one pass.

    Each photo's crop region becomes a window of one common size (:class:`Windows`),
    with the feathered weight set to 0 where the window passes its own region. All
    frames of a photo share its sampling grid, so one grid_sample samples them all
    (frames as channels); pixel for pixel as :meth:`PasteBack.to_uint8` does it.
    """

    def __init__(self, pastes: list[PasteBack]):
        if len({tuple(p.photo.shape) for p in pastes}) != 1:
            raise InputError("a batched paste-back needs photos of one size; paste photo by photo instead")
        photos = torch.stack([p.photo for p in pastes])                          # [B, 3, H, W]
        device = photos.device
        self.windows = Windows.common([(p.y0, p.y1, p.x0, p.x1) for p in pastes], *photos.shape[2:], device)
        tops, lefts = self.windows.rows[:, 0].tolist(), self.windows.cols[:, 0].tolist()
        height, width = self.windows.rows.shape[1], self.windows.cols.shape[1]
        grids = [region_grid(p.box, top, top + height, left, left + width) for p, top, left in zip(pastes, tops, lefts)]
        # In the photos' device and float type (the appearances', see PasteBack.to).
        self.grid = torch.stack(grids).to(device, photos.dtype)                    # [B, h, w, 2]
        alpha = torch.stack([feather_alpha(g, p.feather) for g, p in zip(grids, pastes)]).to(device, photos.dtype)
        self.alpha = (alpha * self.windows.inside)[:, :, None]                     # [B, 1, 1, h, w]
        every = torch.arange(len(pastes), device=device)
        self.under = self.windows.gather(photos[:, None], every, torch.zeros_like(every))[:, :, None]  # [B, 3, 1, h, w]
        self.photo_bytes = photos.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def to_uint8(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [B, T, 3, S, S] float (cheapest as :meth:`MeshDecoder.render_batch`
        returns them: a view of [B, 3, T, S, S] memory) -> photos [B, T, H, W, 3] uint8."""
        count, frames, _, size, _ = crops.shape
        by_colour = crops.transpose(1, 2).reshape(count, 3 * frames, size, size)    # a view when possible
        sampled = F.grid_sample(by_colour, self.grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled.unflatten(1, (3, frames))                                 # [B, 3, T, h, w]
        region = (self.under + self.alpha * (sampled - self.under)).clamp(0, 255).round().to(torch.uint8)
        out = self.photo_bytes.new_empty((count, frames, *self.photo_bytes.shape[1:]))
        out.copy_(self.photo_bytes[:, None])
        photo, frame = every_frame(count, frames, crops.device)
        values = region.transpose(1, 2).flatten(0, 1)                              # [B*T, 3, h, w]
        self.windows.scatter(out.permute(0, 1, 4, 2, 3), photo, frame, values)
        return out
