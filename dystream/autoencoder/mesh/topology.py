"""Landmark indices of MediaPipe's 478-point face mesh that the mesh decoder moves.

Sides are the subject's: "right" is the person's right, which is the image's left
on a frontal photo (landmark 61 is the mouth corner at the image's left).
Lists run along the contour from the image's left to its right, so that an upper
and a lower list of the same length pair up point by point.
"""

from __future__ import annotations

NUM_LANDMARKS = 478
NUM_MESH_POINTS = 468          # 468..477 are iris points: never control points (they would fold under a closing lid)
CHIN = 152
FOREHEAD = 10
NOSE_TIP = 1

MOUTH_CORNER_RIGHT = 61        # image left
MOUTH_CORNER_LEFT = 291        # image right
UPPER_LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

# Eyelids without the corners (corners stay put when a lid closes).
RIGHT_UPPER_LID = (246, 161, 160, 159, 158, 157, 173)
RIGHT_LOWER_LID = (7, 163, 144, 145, 153, 154, 155)
LEFT_UPPER_LID = (398, 384, 385, 386, 387, 388, 466)
LEFT_LOWER_LID = (382, 381, 380, 374, 373, 390, 249)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
# The fold of skin just above each upper lid, which drops with the lid.
RIGHT_LID_FOLD = (247, 30, 29, 27, 28, 56, 190)
LEFT_LID_FOLD = (414, 286, 258, 257, 259, 260, 467)

RIGHT_BROW_INNER = (107, 66, 55, 65)
RIGHT_BROW_OUTER = (70, 63, 46, 53, 105, 52)
LEFT_BROW_INNER = (336, 296, 285, 295)
LEFT_BROW_OUTER = (300, 293, 276, 283, 334, 282)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
             54, 103, 67, 109)

ALL_LIPS = tuple(sorted(set(UPPER_LIP_OUTER + LOWER_LIP_OUTER + UPPER_LIP_INNER + LOWER_LIP_INNER)))
UPPER_LIP = tuple(sorted(set(UPPER_LIP_OUTER + UPPER_LIP_INNER) - {61, 291, 78, 308}))
LOWER_LIP = tuple(sorted(set(LOWER_LIP_OUTER + LOWER_LIP_INNER) - {61, 291, 78, 308}))
