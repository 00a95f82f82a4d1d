"""Same-size pixel windows at per-photo offsets, for compositing frames of many photos at once.

The mouth, the eyes and the paste-back region sit at a different place, and have a
different size, in every photo. To paint frames of B photos in one pass, each photo
gets a window of one common size (the largest asked for), placed over its own window
and moved back inside the image where it would stick out; a mask marks the pixels of
the photo's own window, so that pixels the common window adds are left as they are.
Windows are gathered from and scattered into frames [B, T, C, H, W] with index
tensors (any strides, e.g. a channels-last view), so there is no Python loop over
photos. The frames a call touches are listed as (photo, frame) index pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Windows:
    """B windows of one size: ``rows`` [B, H] and ``cols`` [B, W] image indices (long),
    ``inside`` [B, 1, H, W] 1 where the pixel belongs to the photo's own window, else 0."""

    rows: torch.Tensor
    cols: torch.Tensor
    inside: torch.Tensor

    @classmethod
    def common(cls, windows: list[tuple[int, int, int, int]], height: int, width: int,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "Windows":
        """One window per photo from ``(row0, row1, col0, col1)`` each (inside an image of
        ``height`` x ``width``): the common size is the largest, placed at each own
        window's corner, moved back inside the image where needed (so it still covers it)."""
        common_h = max(max(r1 - r0, 0) for r0, r1, _, _ in windows)
        common_w = max(max(c1 - c0, 0) for _, _, c0, c1 in windows)
        tops = [min(r0, height - common_h) for r0, _, _, _ in windows]
        lefts = [min(c0, width - common_w) for _, _, c0, _ in windows]
        rows = torch.tensor(tops)[:, None] + torch.arange(common_h)
        cols = torch.tensor(lefts)[:, None] + torch.arange(common_w)
        own = torch.tensor(windows, dtype=torch.long)
        in_rows = (rows >= own[:, :1]) & (rows < own[:, 1:2])
        in_cols = (cols >= own[:, 2:3]) & (cols < own[:, 3:4])
        inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        return cls(rows.to(device), cols.to(device), inside.to(device, dtype))

    @property
    def empty(self) -> bool:
        return self.rows.shape[1] == 0 or self.cols.shape[1] == 0

    def centres(self, photo: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centres x, y [M, H*W] (row-major over the window, image pixels) of the
        windows of ``photo`` [M] (indices into the B photos)."""
        rows, cols = self.rows[photo], self.cols[photo]
        count, height, width = len(photo), rows.shape[1], cols.shape[1]
        y = (rows.to(dtype) + 0.5)[:, :, None].expand(count, height, width)
        x = (cols.to(dtype) + 0.5)[:, None, :].expand(count, height, width)
        return x.reshape(count, -1), y.reshape(count, -1)

    def _index(self, photo: torch.Tensor, frame: torch.Tensor) -> tuple:
        return (photo[:, None, None], frame[:, None, None], slice(None),
                self.rows[photo][:, :, None], self.cols[photo][:, None, :])

    def gather(self, frames: torch.Tensor, photo: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """frames [B, T, C, Hi, Wi] -> the windows [M, C, H, W] of the M frames
        (``photo``, ``frame``) [M] each (a copy)."""
        return frames[self._index(photo, frame)].permute(0, 3, 1, 2)

    def scatter(self, frames: torch.Tensor, photo: torch.Tensor, frame: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        """Write ``values`` [M, C, H, W] into the windows of the M frames (``photo``,
        ``frame``) of ``frames`` [B, T, C, Hi, Wi], in place (also through a view)."""
        frames[self._index(photo, frame)] = values.permute(0, 2, 3, 1)
        return frames


def every_frame(photos: int, frames: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(photo, frame) index pairs [B*T] each of B photos x T frames, photo-major."""
    photo = torch.arange(photos, device=device).repeat_interleave(frames, output_size=photos * frames)
    frame = torch.arange(frames, device=device).repeat(photos)
    return photo, frame
