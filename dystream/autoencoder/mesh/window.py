"""Same-size pixel windows at per-image offsets, for batched compositing.

The mouth, the eyes and the paste-back region sit at a different place, and have a
different size, in every photo. To paint B photos in one pass, each image gets a
window of one common size (the largest asked for), placed over its own window and
moved inside the image where it would stick out; a mask marks the pixels of the
image's own window, so that pixels the common window adds are left as they are.
Windows are gathered and scattered with index tensors, so no Python loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Windows:
    """N windows of one size: ``rows`` [N, H] and ``cols`` [N, W] image indices (long),
    ``inside`` [N, 1, H, W] 1 where the pixel belongs to the image's own window, else 0."""

    rows: torch.Tensor
    cols: torch.Tensor
    inside: torch.Tensor

    @classmethod
    def common(cls, windows: list[tuple[int, int, int, int]], height: int, width: int,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "Windows":
        """One window per image from ``(row0, row1, col0, col1)`` each (inside an image of
        ``height`` x ``width``): the common size is the largest, placed at each own
        window's corner, moved back inside the image where needed (so it still covers it)."""
        spans = [(max(r1 - r0, 0), max(c1 - c0, 0)) for r0, r1, c0, c1 in windows]
        common_h = max((h for h, _ in spans), default=0)
        common_w = max((w for _, w in spans), default=0)
        tops = [min(r0, height - common_h) for r0, _, _, _ in windows]
        lefts = [min(c0, width - common_w) for _, _, c0, _ in windows]
        rows = torch.tensor(tops)[:, None] + torch.arange(common_h)
        cols = torch.tensor(lefts)[:, None] + torch.arange(common_w)
        own = torch.tensor(windows, dtype=torch.long).reshape(-1, 4)
        in_rows = (rows >= own[:, :1]) & (rows < own[:, 1:2])
        in_cols = (cols >= own[:, 2:3]) & (cols < own[:, 3:4])
        inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        return cls(rows.to(device), cols.to(device), inside.to(device, dtype))

    @property
    def empty(self) -> bool:
        return self.rows.shape[1] == 0 or self.cols.shape[1] == 0

    def per_frame(self, frames: int) -> "Windows":
        """Each image's window repeated for its ``frames`` consecutive frames (N -> N * frames)."""
        return Windows(*(repeat_frames(t, frames) for t in (self.rows, self.cols, self.inside)))

    def centres(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centres x, y [N, H*W] (row-major over the window), in image pixels."""
        count, height, width = self.rows.shape[0], self.rows.shape[1], self.cols.shape[1]
        y = (self.rows.to(dtype) + 0.5)[:, :, None].expand(count, height, width)
        x = (self.cols.to(dtype) + 0.5)[:, None, :].expand(count, height, width)
        return x.reshape(count, -1), y.reshape(count, -1)

    def _index(self, images: torch.Tensor) -> tuple[torch.Tensor, slice, torch.Tensor, torch.Tensor]:
        batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
        return batch, slice(None), self.rows[:, :, None], self.cols[:, None, :]

    def gather(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, Hi, Wi] -> the windows [N, C, H, W] (a copy)."""
        return images[self._index(images)].permute(0, 3, 1, 2)

    def scatter(self, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Write ``values`` [N, C, H, W] into the windows of ``images`` [N, C, Hi, Wi]
        (in place, also through a permuted view) and return ``images``."""
        images[self._index(images)] = values.permute(0, 2, 3, 1)
        return images


def repeat_frames(tensor: torch.Tensor, frames: int) -> torch.Tensor:
    """[N, ...] -> [N * frames, ...], each row repeated for ``frames`` consecutive rows."""
    return tensor.unsqueeze(1).expand(-1, frames, *tensor.shape[1:]).flatten(0, 1)
