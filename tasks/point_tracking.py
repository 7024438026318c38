"""Point tracking (TAP-Vid protocol, 4DS readout).

Queries: each query point (t, y, x), normalised to [0, 1], is encoded with Fourier features
(16 bases) → MLP(512) and replicated per time chunk of the feature grid (T' chunks) with a
learned temporal embedding; query token (n, t') predicts, for every frame of chunk t', the
point's position and an occlusion logit. Positions are predicted as offsets from the query
point in normalised image units, so a zero output is the "static point" tracker.

Queries are built from the ground-truth tracks as in TAP-Vid (``sample_queries_first`` /
``sample_queries_strided`` of Doersch et al. 2022): mode 'first' (default) queries every track at
its first visible frame and scores only later frames; mode 'strided' queries every track that is
visible at frames 0, s, 2s, … and scores every frame but the query frame. Tracks that give no
query (never visible; occluded at a stride frame) are left out. With ``train_tracks`` = k, each
training step reads k tracks of every clip, drawn at random without replacement (TAP-Net and TAPIR
train on tracks sampled afresh from each Kubric clip: ``tracks_to_sample`` of the Kubric
point-tracking loader); evaluation queries every track.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from bench.errors import ConfigError, DatasetError
from bench.registry import TASKS
from bench.task import FeatureSpec
from tasks._queries import QueryTrackingTask

THRESHOLDS = (1, 2, 4, 8, 16)  # pixels, after scaling to 256×256
TRACK_KEYS = ("target_points", "occluded", "query_points", "track_object")  # clip keys indexed [clip, track, ...]


def make_queries(target_points, occluded, mode: str = "first", stride: int = 5):
    """TAP-Vid queries from tracks (numpy or torch; leading batch axes allowed).

    target_points [..., N, T, 2] (x, y) px, occluded [..., N, T] ->
    (query_points [..., Q, 3] (t, y, x) px, valid [..., Q] bool, track [Q] index into N).
    'first': Q = N, the first visible frame of each track (valid = visible at least once).
    'strided': Q = S·N laid out (s n) for frames 0, stride, …; valid = visible at that frame.
    """
    is_np = isinstance(target_points, np.ndarray)
    pts = torch.from_numpy(np.array(target_points)) if is_np else target_points  # a copy: memmaps are read-only
    occ = torch.from_numpy(np.array(occluded)) if is_np else occluded
    vis = ~occ.bool()
    n, t = vis.shape[-2:]
    if mode == "first":
        valid = vis.any(-1)
        qt = vis.to(torch.uint8).argmax(-1)  # first True (0 when never visible; masked by valid)
        track = torch.arange(n)
    elif mode == "strided":
        frames = torch.arange(0, t, stride)
        qt = frames.view(-1, 1).expand(-1, n).reshape(-1)  # (s n)
        track = torch.arange(n).repeat(len(frames))
        qt = qt.expand(*vis.shape[:-2], -1)
        valid = torch.gather(vis[..., track, :], -1, qt.unsqueeze(-1)).squeeze(-1)
    else:
        raise ConfigError(f"query_mode={mode!r}: expected 'first' or 'strided'")
    xy = torch.gather(pts[..., track, :, :], -2, qt[..., None, None].expand(*qt.shape, 1, 2)).squeeze(-2)
    query = torch.stack([qt.to(pts.dtype), xy[..., 1], xy[..., 0]], dim=-1)
    if is_np:
        return query.numpy(), valid.numpy(), track.numpy()
    return query, valid, track


def evaluation_frames(query_frame, num_frames: int, mode: str):
    """[..., Q, T] bool: the frames scored for each query — after the query frame ('first'),
    every frame but the query frame ('strided') — as in TAP-Vid's ``compute_tapvid_metrics``."""
    t = np.arange(num_frames)
    q = np.round(np.asarray(query_frame)).astype(np.int64)[..., None]
    if mode == "first":
        return t > q
    if mode == "strided":
        return t != q
    raise ConfigError(f"query_mode={mode!r}: expected 'first' or 'strided'")


def tapvid_metrics(query_points: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray,
                   pred_occluded: np.ndarray, pred_tracks: np.ndarray, query_mode: str = "first",
                   image_size: tuple[int, int] = (256, 256), query_valid: np.ndarray | None = None) -> dict[str, float]:
    """TAP-Vid metrics averaged over the clips that define them (``tapvid_per_clip``)."""
    per_clip = tapvid_per_clip(query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks, query_mode,
                               image_size, query_valid)
    out = {}
    for name in ("average_jaccard", "delta_avg", "occlusion_accuracy"):
        values = per_clip[name]
        if not np.isfinite(values).any():
            raise DatasetError(f"point tracking: no clip defines {name} (no evaluation frame with a visible "
                               f"point or a predicted-visible point)")
        out[name] = float(np.nanmean(values))
    return out


def tapvid_per_clip(query_points: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray,
                    pred_occluded: np.ndarray, pred_tracks: np.ndarray, query_mode: str = "first",
                    image_size: tuple[int, int] = (256, 256),
                    query_valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """TAP-Vid metrics (Doersch et al., NeurIPS 2022 Datasets & Benchmarks, §4; the definitions
    of ``compute_tapvid_metrics`` in google-deepmind/tapnet), per clip then averaged over clips.

    Inputs are batched per clip: query_points [B, Q, 3] (t, y, x), gt/pred occluded [B, Q, T]
    bool, gt/pred tracks [B, Q, T, 2] (x, y) in pixels of an image of ``image_size`` (H, W);
    coordinates are first scaled to 256×256. Only the evaluation frames of each (valid) query
    count (``evaluation_frames``: the query frame is never scored). With thresholds
    δ ∈ {1, 2, 4, 8, 16} px and "within" meaning ‖p̂ − p‖ < δ:
      occlusion_accuracy = #(pred occluded == gt occluded) / #frames;
      δ^x_avg (``delta_avg``) = mean over δ of #(gt visible ∧ within δ) / #(gt visible),
        whatever the predicted occlusion;
      Jaccard_δ = TP / (TP + FP + FN) = TP / (#gt visible + FP), TP = gt visible ∧ pred visible
        ∧ within δ, FP = pred visible ∧ (gt occluded ∨ not within δ);
      Average Jaccard (``average_jaccard``) = mean over δ of Jaccard_δ.
    Returns each metric per clip [B]. A clip where a ratio is 0/0 (e.g. no visible evaluation
    point and none predicted visible) holds NaN: ``tapvid_metrics`` leaves it out of the mean,
    and a metric no clip defines is an error there (a record must hold finite numbers).
    """
    gt_occ, pred_occ = np.asarray(gt_occluded, bool), np.asarray(pred_occluded, bool)
    b, q, t = gt_occ.shape
    evaluate = evaluation_frames(np.asarray(query_points)[..., 0], t, query_mode)
    if query_valid is not None:
        evaluate = evaluate & np.asarray(query_valid, bool)[..., None]
    scale = np.array([256.0 / image_size[1], 256.0 / image_size[0]])
    dist2 = np.sum(np.square((np.nan_to_num(np.asarray(pred_tracks, np.float64), nan=1e9)
                              - np.nan_to_num(np.asarray(gt_tracks, np.float64), nan=-1e9)) * scale), axis=-1)
    visible, pred_visible = ~gt_occ, ~pred_occ
    axes = (1, 2)

    def ratio(num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    per_clip = {"occlusion_accuracy": ratio(np.sum((pred_occ == gt_occ) & evaluate, axes), np.sum(evaluate, axes))}
    n_visible = np.sum(visible & evaluate, axes)
    within_frac, jaccard = [], []
    for thresh in THRESHOLDS:
        within = dist2 < thresh ** 2
        within_frac.append(ratio(np.sum(within & visible & evaluate, axes), n_visible))
        tp = np.sum(within & visible & pred_visible & evaluate, axes)
        fp = np.sum(pred_visible & (~visible | ~within) & evaluate, axes)
        jaccard.append(ratio(tp, n_visible + fp))
    per_clip["delta_avg"] = np.mean(within_frac, axis=0)  # NaN in one δ means NaN in all δ
    per_clip["average_jaccard"] = np.mean(jaccard, axis=0)
    return per_clip


@TASKS.register()
class PointTracking(QueryTrackingTask):
    name = "point_tracking"
    requires = ("video", "target_points", "occluded")
    metric_directions = {"average_jaccard": True, "delta_avg": True, "occlusion_accuracy": True}
    coord_dim, frame_dim = 3, 3  # query (t, y, x); per frame dx, dy, occlusion logit
    has_query_appearance = True
    plot_legend = "o/— true, x/-- pred"
    positive_options = ("huber_delta",)

    def __init__(self, spec: FeatureSpec, readout: str = "attentive", query_mode: Literal["first", "strided"] = "first",
                 query_stride: int = 5, num_bases: int = 16, mlp_hidden: int = 512, huber_delta: float = 4.0,
                 occlusion_weight: float = 1.0, train_tracks: int | None = None, **cfg: Any):
        self.check_options(query_mode=query_mode)
        super().__init__(spec, readout, num_bases, mlp_hidden, **cfg)
        self.query_mode, self.query_stride = query_mode, query_stride
        self.huber_delta, self.occlusion_weight = huber_delta, occlusion_weight
        if train_tracks is not None and train_tracks < 1:
            raise ConfigError(f"task.train_tracks={train_tracks}: expected a positive number of tracks or null (all)")
        self.train_tracks = train_tracks
        _, h, w = spec.clip
        self.size = torch.tensor([w, h], dtype=torch.float32)  # (x, y) normaliser

    def train_view(self, batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``train_tracks`` tracks of each clip, a fresh random subset per clip and step, kept in
        their order (all of them when the clip has no more): a step's query-side cost (the query
        MLP, attention and head, most of a step) shrinks with them (docs/performance.md)."""
        b, n = batch["target_points"].shape[:2]
        if self.train_tracks is None or self.train_tracks >= n:
            return batch
        keep = torch.from_numpy(np.sort(np.argsort(rng.random((b, n)), axis=1)[:, :self.train_tracks], axis=1))
        keep = keep.to(batch["target_points"].device)

        def take(x: torch.Tensor) -> torch.Tensor:
            return x.gather(1, keep.view(b, -1, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))

        return {k: take(v) if k in TRACK_KEYS else v for k, v in batch.items()}

    # --- queries -------------------------------------------------------------------------
    def _queries(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return make_queries(batch["target_points"], batch["occluded"], self.query_mode, self.query_stride)

    def query_coords(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised (t, y, x) in [0, 1] of every query, [B, Q, 3]."""
        query = torch.nan_to_num(self._queries(batch)[0].float())  # invalid queries may hold NaN
        t, h, w = self.spec.clip
        return query / query.new_tensor([max(t - 1, 1), h, w])

    def query_place(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The query point, normalised (y, x): [B, Q, 2]."""
        return self.query_coords(batch)[..., 1:]

    def query_appearance(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The token under each query point (``linear_pool``) in the time chunk of its query frame,
        given to every query token of that point: [B, Q·T', C], laid out (q t'). A tracker must know
        what it follows to find it again (TAP-Net and TAPIR start from the features at the query point)."""
        per_chunk = rearrange(self.linear_pool(features, batch), "b (q t) c -> b q t c", t=self.chunks)
        chunk = (torch.nan_to_num(self._queries(batch)[0][..., 0]).long() // self.chunk_len).clamp(0, self.chunks - 1)
        own = per_chunk.gather(2, chunk[..., None, None].expand(-1, -1, 1, per_chunk.shape[-1]))
        return rearrange(own.expand(-1, -1, self.chunks, -1), "b q t c -> b (q t) c")

    # --- outputs -------------------------------------------------------------------------
    def _split(self, out: torch.Tensor, batch: dict[str, torch.Tensor]):
        """Readout output [B, Q·T', 3·L] -> normalised positions [B, Q, T, 2], occlusion logits [B, Q, T]."""
        out = self.per_frame(out)
        start = self.query_coords(batch)[..., [2, 1]]  # (x, y) of the query point
        return start.unsqueeze(2) + out[..., :2], out[..., 2]

    def _targets(self, batch: dict[str, torch.Tensor]):
        _, valid, track = self._queries(batch)
        pts = batch["target_points"][:, track].float() / self.size.to(batch["target_points"].device)
        occ = batch["occluded"][:, track].bool()
        return pts, occ, valid

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Huber (δ = ``huber_delta`` px at 256×256, divided by δ) on the positions of visible
        points + ``occlusion_weight`` · BCE on the occlusion logits, over valid queries."""
        pos, logit = self._split(out, batch)
        gt, occ, valid = self._targets(batch)
        vis = ~occ & valid[..., None]
        pos_loss = (F.huber_loss(pos[vis] * 256.0, gt[vis] * 256.0, delta=self.huber_delta) / self.huber_delta
                    if vis.any() else pos.sum() * 0)
        occ_mask = valid[..., None].expand_as(occ)
        occ_loss = (F.binary_cross_entropy_with_logits(logit[occ_mask], occ[occ_mask].float())
                    if occ_mask.any() else logit.sum() * 0)
        return pos_loss + self.occlusion_weight * occ_loss

    def decode(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pos, logit = self._split(out, batch)
        query, valid, _ = self._queries(batch)
        return {"tracks": pos * self.size.to(pos.device), "occluded": logit > 0, "query_points": query,
                "query_valid": valid}

    def _scored(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple:
        """The arguments of ``tapvid_metrics`` / ``tapvid_per_clip`` for a split."""
        query, valid, track = make_queries(target["target_points"], target["occluded"], self.query_mode,
                                           self.query_stride)
        return (query, target["occluded"][:, track], target["target_points"][:, track], pred["occluded"],
                pred["tracks"], self.query_mode, self.spec.clip[1:], valid)

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        return tapvid_metrics(*self._scored(pred, target))

    def per_clip(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each clip's Average Jaccard, weight 1 (0 for a clip that does not define it)."""
        values = tapvid_per_clip(*self._scored(pred, target))[self.primary_metric]
        defined = np.isfinite(values)
        return np.where(defined, values, 0.0), defined.astype(np.float64)

    def draw_clip(self, axes: Sequence[Any], frames: list[int], i: int, pred: dict[str, np.ndarray],
                  target: dict[str, np.ndarray]) -> None:
        """Up to 12 valid tracks so far: truth solid (o where visible), prediction dashed (x where visible)."""
        import matplotlib.pyplot as plt

        _, _, track = make_queries(target["target_points"][i], target["occluded"][i], self.query_mode,
                                   self.query_stride)
        valid = pred["query_valid"][i]
        gt, occ = target["target_points"][i][track][valid], target["occluded"][i][track][valid]
        pr, pr_occ = pred["tracks"][i][valid], pred["occluded"][i][valid]
        shown = np.linspace(0, len(gt) - 1, min(12, len(gt))).astype(int) if len(gt) else []
        colors = plt.cm.hsv(np.linspace(0, 1, max(len(shown), 1), endpoint=False))
        for ax, f in zip(axes, frames):
            for c, k in zip(colors, shown):
                ax.plot(gt[k, :f + 1, 0], gt[k, :f + 1, 1], "-", color=c, lw=1, alpha=0.9)
                ax.plot(pr[k, :f + 1, 0], pr[k, :f + 1, 1], "--", color=c, lw=1, alpha=0.9)
                if not occ[k, f]:
                    ax.plot(gt[k, f, 0], gt[k, f, 1], "o", color=c, ms=4, mfc="none")
                if not pr_occ[k, f]:
                    ax.plot(pr[k, f, 0], pr[k, f, 1], "x", color=c, ms=4)
