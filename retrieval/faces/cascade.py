"""MTCNN's three-stage cascade over ``facenet-pytorch``'s networks, with a cheaper image pyramid.

MTCNN (Zhang et al. 2016) runs its proposal network (P-Net, a 12 × 12 window, stride 2) over an
image pyramid: level k is the image scaled by s_k = (12 / min_face_size) · factor^k, for every k
with s_k · min(h, w) ≥ 12, so a face of min_face_size pixels fills P-Net's window at level 0. The
candidates are then cut from the *full* image, resampled to 24 × 24 for R-Net and 48 × 48 for
O-Net, and O-Net gives the final box, score and five landmarks.

``facenet-pytorch`` 2.5.3 (``detect_face``) builds every level by area-resampling the full image.
With our finer pyramid (factor 0.85) a 1-megapixel photo has 19 levels, and those 19 passes over
the whole photo cost about 145 ms of one core, as much as the three networks together. Here the
image is first halved into octaves (2 × 2 means, each a quarter of the one before, built only as
deep as needed), and each level is area-resampled from the smallest octave at least
:data:`SOURCE_RATIO` (4) times its height; the levels near the top of the pyramid still come from
the full image (at 1 MP the first 6 of 19, exactly as facenet-pytorch's). The other levels differ
from facenet-pytorch's by resampling noise (mean 0.9 to 4 grey levels, the most in the smallest
levels, which look for the largest faces), which changes MTCNN's answer on borderline photos only: on the 130 photos of
``att_faces_scenes`` (one in four upscaled to 1 MP) 5 differ in the number of faces, both ways
(a face found or lost), and the counts of ``benchmarks/faces.py`` are 30/30 pairs placed and 98/100
single photos with one face, against 29/30 and 99/100 with facenet-pytorch's pyramid; ±1 grey
level of noise on the input changes none. Stages 2 and 3 are facenet-pytorch's (MIT licence), with
its own helpers, unchanged; a box with no pixel inside the image is dropped together with its crop
(facenet-pytorch drops only the crop, which misaligns the boxes after it).

O-Net's landmarks depend on the box it was shown, and that box is R-Net's regression of a P-Net
proposal: the same face at another size or place in another photo gets another box and landmarks
about 0.1 of the eye distance away (RMS; 100 faces of the training people, tight crop against the
same face pasted into a photo). :func:`refine_landmarks` runs O-Net again on a box made from the
landmarks themselves (:data:`REFINE_BOX`, a square fixed in the alignment template's frame), so
that every face is shown to O-Net at the same position and scale whatever its first box was. Two
such passes bring the disagreement down to 0.024 (one: 0.037; a third changes nothing):
``landmark_passes`` of :class:`~retrieval.faces.detect.DetectorSettings`.

Each refinement pass also gives O-Net's face probability for that landmark-placed square, and a
face is kept only when every pass scores it at least ``recheck_threshold`` (0.9 by default). A
real face, framed by its own eyes, nose and mouth, stays a face to O-Net (of 2097 faces pasted into
photos of the training people, 1 scored below 0.9 and none below 0.81; their 300 crops 0.93 or
more); most of the "faces" that O-Net passed in fruit and cartons do not survive being framed that
way (36 of 50 fell below 0.9).

Two changes of speed give the same numbers, bit for bit (checked on 125 photos, a quarter of them
at 1 MP: every box, score and landmark): the three networks' max-pooling layers (``nn.MaxPool2d``
with ``ceil_mode``) are swapped for :class:`StridedMaxPool`, the maximum of strided views (a
maximum does not round; torch's CPU kernel took about 50 ms of a 1-megapixel detection on one
thread, most of it in R-Net's first layer over a few hundred candidates; the views about 7 ms), and
the photo is held planar, (n, c, h, w), which area resampling reads about twice as fast as the
(n, h, w, c) of the decoded array; each pyramid level goes to P-Net channels-last, as before, so its
convolutions round as before. One thread, 1 MP: about 250 ms a detection before, 200 ms after.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import avg_pool2d, interpolate

from retrieval.faces.align import TEMPLATE, apply_transform, invert_transform, similarity_transform

__all__ = ["CASCADE_NAME", "REFINE_BOX", "SOURCE_RATIO", "StridedMaxPool", "detect_faces", "pyramid_levels",
           "pyramid_scales", "refine_landmarks", "use_strided_max_pools"]

#: recorded with the detector's version: it names the detection cache
CASCADE_NAME = "pyramid-from-octaves-4x"
#: a pyramid level is area-resampled from the smallest octave (the image halved k times by 2 × 2
#: means) at least this many times its height: every level pixel then averages 16 or more octave pixels
SOURCE_RATIO = 4
#: The box O-Net is shown in a landmark refinement pass, in the 112 × 112 template frame of
#: :data:`~retrieval.faces.align.TEMPLATE`: a square of ``side`` around ``centre`` (x, y). It is
#: the median of O-Net's own final boxes mapped into that frame, over 200 faces of the training
#: people s21-s30 (their crops and the same faces pasted into photos): where O-Net's boxes sit.
REFINE_BOX = {"centre": (54.9, 63.5), "side": 99.3}


class StridedMaxPool(torch.nn.Module):
    """``nn.MaxPool2d(kernel, stride, ceil_mode=True)`` without padding (stride ≤ kernel), as the
    maximum of strided views: along height, then width, with n = ceil((size − kernel) / stride) + 1
    outputs, out[i] = max of in[i · stride + o] over the offsets o < kernel that stay inside the input
    (the last window may be short; it starts inside, as stride ≤ kernel). The same numbers as
    torch's layer (a maximum does not round), in the input's memory format; on one CPU thread 3 to
    10 times faster for MTCNN's shapes."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        if not 1 <= stride <= kernel:
            raise ValueError(f"StridedMaxPool needs 1 <= stride <= kernel, got kernel {kernel}, stride {stride}")
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the output in the input's memory format, as torch's layer: the next convolution then rounds the same way
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for dim in (2, 3):
            x = self._pool_along(x, dim, layout)
        return x

    def _pool_along(self, x: torch.Tensor, dim: int, layout: torch.memory_format) -> torch.Tensor:
        """Pooled along ``dim``: the offset-o view holds in[o], in[o + stride], ... for the windows
        it reaches (the last windows are short where the input ends: they take the views that reach them)."""
        size, k, s = x.shape[dim], self.kernel, self.stride
        if size < k:
            raise ValueError(f"StridedMaxPool: input size {size} is smaller than the kernel {k}")
        n = -(-(size - k) // s) + 1
        views = []
        for o in range(k):
            reach = min(n, -(-(size - o) // s))
            view = x.narrow(dim, o, (reach - 1) * s + 1)
            views.append(view[:, :, ::s] if dim == 2 else view[:, :, :, ::s])
        shape = list(x.shape)
        shape[dim] = n
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
        if k == 1:
            return out.copy_(views[0])
        both = views[1].shape[dim]
        torch.maximum(views[0].narrow(dim, 0, both), views[1], out=out.narrow(dim, 0, both))
        if both < n:
            out.narrow(dim, both, n - both).copy_(views[0].narrow(dim, both, n - both))
        for view in views[2:]:
            head = out.narrow(dim, 0, view.shape[dim])
            torch.maximum(head, view, out=head)
        return out


def use_strided_max_pools(mtcnn) -> None:
    """Swap every max-pooling layer of MTCNN's three networks (ceil_mode, no padding, no dilation,
    square, stride ≤ kernel: all of facenet-pytorch's) for the equivalent :class:`StridedMaxPool`."""
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, layer in list(net.named_children()):
            if not (isinstance(layer, torch.nn.MaxPool2d) and layer.ceil_mode):
                continue
            (k, k2), (s, s2) = _pair(layer.kernel_size), _pair(layer.stride)
            if k == k2 and s == s2 and s <= k and _pair(layer.padding) == (0, 0) and _pair(layer.dilation) == (1, 1):
                setattr(net, name, StridedMaxPool(k, s))


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """s_k = (12 / min_face_size) · factor^k while s_k · min(height, width) ≥ 12 (facenet-pytorch's rule)."""
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= 12:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def pyramid_levels(images: torch.Tensor, scales: list[float]):
    """Each pyramid level of ``images`` (n, c, h, w), for decreasing ``scales``: the images
    area-resampled to (int(h · s + 1), int(w · s + 1)) (facenet-pytorch's sizes) from the smallest
    octave whose height is at least SOURCE_RATIO × the level's (the full images when none is)."""
    height, width = images.shape[2:]
    octaves = [images]
    for scale in scales:
        size = (int(height * scale + 1), int(width * scale + 1))
        while octaves[-1].shape[2] >= 2 * SOURCE_RATIO * size[0]:  # halving keeps >= SOURCE_RATIO x
            octaves.append(avg_pool2d(octaves[-1], 2, ceil_mode=True))
        yield interpolate(octaves[-1], size=size, mode="area")


def detect_faces(images: np.ndarray, mtcnn, min_face_size: int, thresholds, factor: float, landmark_passes: int = 0,
                 recheck_threshold: float = 0.0):
    """Boxes (x0, y0, x1, y1, score) and landmarks (5, 2) of every face in each image.

    ``images``: uint8 (n, h, w, 3), all one size; ``mtcnn``: facenet-pytorch's ``MTCNN`` (its
    ``pnet``, ``rnet``, ``onet``). Returns two lists of n arrays, as facenet-pytorch's
    ``detect_face``: (faces, 5) boxes with their O-Net score, and (faces, 5, 2) landmarks, the
    landmarks refined ``landmark_passes`` times (:func:`refine_landmarks`; 0: O-Net's first answer).
    A face is kept only when min over the passes of O-Net's score on the pass's landmark-placed
    square is ≥ ``recheck_threshold`` (0, or no pass: every face O-Net passed is kept).
    """
    device = next(mtcnn.pnet.parameters()).device
    with torch.no_grad():
        # planar (n, c, h, w) memory: area resampling reads it about twice as fast as (n, h, w, c)
        imgs = torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2)
        imgs = imgs.to(dtype=next(mtcnn.pnet.parameters()).dtype, memory_format=torch.contiguous_format)  # one copy
        boxes, image_inds = _propose(imgs, mtcnn.pnet, min_face_size, thresholds[0], factor)
        if len(boxes) > 0:
            boxes, image_inds = _refine(imgs, boxes, image_inds, mtcnn.rnet, thresholds[1])
        points = torch.zeros(0, 5, 2, device=device)
        if len(boxes) > 0:
            boxes, image_inds, points = _output(imgs, boxes, image_inds, mtcnn.onet, thresholds[2])
        rechecked = torch.ones(len(boxes), device=device)
        for _ in range(landmark_passes if len(boxes) > 0 else 0):
            points, scores = refine_landmarks(imgs, image_inds, points, mtcnn.onet)
            rechecked = torch.minimum(rechecked, scores)
        if recheck_threshold > 0 and landmark_passes > 0 and len(boxes) > 0:
            keep = rechecked >= recheck_threshold
            boxes, image_inds, points = boxes[keep], image_inds[keep], points[keep]
    boxes, points, image_inds = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    return ([boxes[image_inds == i].copy() for i in range(len(images))],
            [points[image_inds == i].copy() for i in range(len(images))])


def _propose(imgs, pnet, min_face_size, threshold, factor):
    """Stage 1: P-Net over the pyramid; its boxes, merged (NMS within each level, then over all),
    regressed and made square: ((m, 5) x0, y0, x1, y1, score; (m,) image index)."""
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox, rerec
    from torchvision.ops.boxes import batched_nms

    h, w = imgs.shape[2:4]
    boxes, image_inds, scale_picks, offset = [], [], [], 0
    scales = pyramid_scales(h, w, min_face_size, factor)
    for scale, im_data in zip(scales, pyramid_levels(imgs, scales)):
        # P-Net sees each level channels-last, as it always has: its convolutions then give the same numbers
        reg, probs = pnet((im_data.contiguous(memory_format=torch.channels_last) - 127.5) * 0.0078125)
        boxes_scale, image_inds_scale = generateBoundingBox(reg, probs[:, 1], scale, threshold)
        boxes.append(boxes_scale)
        image_inds.append(image_inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], image_inds_scale, 0.5)
        scale_picks.append(pick + offset)
        offset += boxes_scale.shape[0]
    if not boxes:  # no level: the image is smaller than the smallest face
        return torch.zeros(0, 5, device=imgs.device), torch.zeros(0, dtype=torch.long, device=imgs.device)
    boxes, image_inds = torch.cat(boxes, dim=0), torch.cat(image_inds, dim=0)
    scale_picks = torch.cat(scale_picks, dim=0)
    boxes, image_inds = boxes[scale_picks], image_inds[scale_picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]]).permute(1, 0)
    return rerec(boxes), image_inds


def _refine(imgs, boxes, image_inds, rnet, threshold):
    """Stage 2: R-Net on each candidate cut from the full image at 24 × 24; those that pass, merged
    (NMS), regressed and made square."""
    from facenet_pytorch.models.utils.detect_face import bbreg, fixed_batch_process, rerec
    from torchvision.ops.boxes import batched_nms

    crops, kept = _crops(imgs, boxes, image_inds, 24)
    boxes, image_inds = boxes[kept], image_inds[kept]
    if len(boxes) == 0:
        return boxes, image_inds
    out = fixed_batch_process((crops - 127.5) * 0.0078125, rnet)
    score = out[1].permute(1, 0)[1, :]
    ipass = score > threshold
    boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
    image_inds = image_inds[ipass]
    mv = out[0].permute(1, 0)[:, ipass].permute(1, 0)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
    return rerec(bbreg(boxes, mv)), image_inds


def _output(imgs, boxes, image_inds, onet, threshold):
    """Stage 3: O-Net at 48 × 48: the faces that pass, their regressed boxes with the score, and
    their five landmarks in image pixels, merged by NMS over the smaller box ("Min")."""
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, fixed_batch_process

    crops, kept = _crops(imgs, boxes, image_inds, 48)
    boxes, image_inds = boxes[kept], image_inds[kept]
    if len(boxes) == 0:
        return boxes, image_inds, torch.zeros(0, 5, 2, device=boxes.device)
    out = fixed_batch_process((crops - 127.5) * 0.0078125, onet)
    score = out[2].permute(1, 0)[1, :]
    ipass = score > threshold
    points = out[1].permute(1, 0)[:, ipass]
    boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
    image_inds = image_inds[ipass]
    mv = out[0].permute(1, 0)[:, ipass].permute(1, 0)
    w_i = boxes[:, 2] - boxes[:, 0] + 1
    h_i = boxes[:, 3] - boxes[:, 1] + 1
    points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
    points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
    points = torch.stack((points_x, points_y)).permute(2, 1, 0)
    boxes = bbreg(boxes, mv)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
    return boxes[pick], image_inds[pick], points[pick]


@torch.no_grad()
def refine_landmarks(imgs, image_inds, points, onet):
    """One refinement pass: each face's five landmarks (``points``, (m, 5, 2), image pixels) again
    from O-Net, shown the face in the box that the landmarks themselves give, and O-Net's face
    probability for that box (m,): returns (points, scores).

    With T the similarity transform of the landmarks onto the template (least squares,
    :func:`~retrieval.faces.align.similarity_transform`) and s its scale, the box is the square of
    side w = round(side / s) whose first pixel is a = round(T⁻¹(centre) − w / 2) (x and y), with
    :data:`REFINE_BOX`'s centre and side; what lies outside the image is black. O-Net sees it
    area-resampled to 48 × 48 and answers p (10 numbers in 0-1), and the landmark k is
    (a_x + p_k · w, a_y + p_(k+5) · w), facenet-pytorch's rule for its own boxes. No landmark
    changes the box the face is reported with, nor its score; a face whose five landmarks
    coincide (no transform is defined) keeps them, with a score of 1 (not rechecked)."""
    from facenet_pytorch.models.utils.detect_face import fixed_batch_process

    centre, side = np.asarray(REFINE_BOX["centre"], dtype=np.float64), float(REFINE_BOX["side"])
    crops, corners, sides, refined = [], [], [], []
    for k, landmarks in enumerate(points.cpu().numpy().astype(np.float64)):
        try:
            matrix = similarity_transform(landmarks, TEMPLATE)
        except ValueError:
            continue
        width = max(1, int(round(side / float(np.hypot(matrix[0, 0], matrix[1, 0])))))
        middle = apply_transform(invert_transform(matrix), centre[None])[0]
        x0, y0 = (int(round(v - width / 2.0)) for v in middle)
        crops.append(_square(imgs[image_inds[k]], x0, y0, width, 48))
        corners.append((x0, y0))
        sides.append(width)
        refined.append(k)
    scores = torch.ones(len(points), dtype=points.dtype, device=points.device)
    if not refined:
        return points, scores
    out = fixed_batch_process((torch.cat(crops, dim=0) - 127.5) * 0.0078125, onet)
    p = out[1].to(points.dtype)
    corner = torch.as_tensor(corners, dtype=points.dtype, device=points.device)
    width = torch.as_tensor(sides, dtype=points.dtype, device=points.device)[:, None]
    points = points.clone()
    refined = torch.as_tensor(refined, device=points.device)
    points[refined] = torch.stack((corner[:, :1] + p[:, :5] * width, corner[:, 1:] + p[:, 5:] * width), dim=2)
    scores[refined] = out[2][:, 1].to(points.dtype)
    return points, scores


def _square(image, x0, y0, width, size):
    """The width × width square of ``image`` (c, h, w) whose first pixel is (x0, y0), black where
    it leaves the image, area-resampled to (1, c, size, size). A square inside the image is read
    in place; only one that leaves it is copied."""
    channels, height, full_width = image.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + width, full_width), min(y0 + width, height)
    if (xa, ya, xb, yb) == (x0, y0, x0 + width, y0 + width):
        square = image[:, y0:y0 + width, x0:x0 + width]
    else:
        square = image.new_zeros((channels, width, width))
        if xb > xa and yb > ya:
            square[:, ya - y0:yb - y0, xa - x0:xb - x0] = image[:, ya:yb, xa:xb]
    return interpolate(square[None], size=(size, size), mode="area")


def _crops(imgs, boxes, image_inds, size):
    """Each box cut from its image (clipped to it) and resampled to size × size, and the indices of
    the boxes kept (facenet-pytorch drops a box with no pixel inside the image; so do we, box and crop)."""
    from facenet_pytorch.models.utils.detect_face import imresample, pad

    h, w = imgs.shape[2:4]
    y, ey, x, ex = pad(boxes, w, h)
    crops, kept = [], []
    for k in range(len(y)):
        if ey[k] > (y[k] - 1) and ex[k] > (x[k] - 1):
            crops.append(imresample(imgs[image_inds[k], :, (y[k] - 1):ey[k], (x[k] - 1):ex[k]].unsqueeze(0), (size, size)))
            kept.append(k)
    kept = torch.as_tensor(kept, dtype=torch.long, device=boxes.device)
    return (torch.cat(crops, dim=0) if crops else None), kept
