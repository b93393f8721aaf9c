"""Vectorised analytic ray casting of a scene.Scene (torch, float32, CPU).

One ray per pixel centre (u, v integers), direction d = R_wc K^-1 [u, v, 1]:
its camera-frame z is 1, so the ray parameter t of a hit IS the metric depth
(camera z) that packops.reproject expects. Primitives are translated into a
camera-centred world frame first (ray origin 0), which keeps float32 exact to
~1e-6 relative. For every pixel the nearest hit among the ground plane, boxes
(slab test), vertical cylinders and spheres is kept, with its normal, kind and
object colour; no Python loop runs over pixels, only over chunks of primitives.

Colour is a deterministic function of the WORLD point (hashed value noise,
lane markings, windows) shaded by a fixed sun (Lambertian): the same surface
point has the same colour in every frame, which is what lets a frame be
reconstructed from its neighbour with the true depth and pose. Texture is
band-limited by the pixel footprint at the hit (octaves and stripes fade to
their mean when they would be thinner than ~2 pixels), so bilinear resampling
of a neighbouring frame reproduces it.

Sky (no hit, or a hit farther than `far`) has depth 0, meaning "no depth".
"""
import math

import numpy as np
import torch

from .scene import (GROUND_Y, KIND_CAR, KIND_CROWN, KIND_FACADE, KIND_GROUND, KIND_POLE,
                    KIND_SKY, KIND_TRUNK)

FAR = 200.0                     # metres; farther hits count as sky (depth 0)
_SUN = torch.tensor([0.5, -1.0, -0.35]) / math.sqrt(0.25 + 1.0 + 0.35 ** 2)
_EPS = 1e-4
_CHUNK = 8                      # primitives tested at once: [_CHUNK, H*W] temporaries


# ------------------------------------------------------------------ noise
def _hash(ix, iy, iz, seed):
    """int64 lattice coordinates -> uniform [0,1) floats (wrapping integer mix)."""
    h = ix * 374761393 + iy * 668265263 + iz * 1274126177 + seed
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(torch.float32) / 65535.0


def _smooth(f):
    return f * f * (3 - 2 * f)


def noise2(a, b, cell, seed):
    """Value noise of two world coordinates [P] with lattice spacing `cell` metres."""
    a, b = a / cell, b / cell
    ia, ib = a.floor(), b.floor()
    fa, fb = _smooth(a - ia), _smooth(b - ib)
    ia, ib = ia.long(), ib.long()
    zero = torch.zeros_like(ia)
    n00, n10 = _hash(ia, ib, zero, seed), _hash(ia + 1, ib, zero, seed)
    n01, n11 = _hash(ia, ib + 1, zero, seed), _hash(ia + 1, ib + 1, zero, seed)
    return torch.lerp(torch.lerp(n00, n10, fa), torch.lerp(n01, n11, fa), fb)


def noise3(X, cell, seed):
    """Value noise of world points X [P,3] with lattice spacing `cell` metres."""
    Q = X / cell
    iq = Q.floor()
    f = _smooth(Q - iq)
    iq = iq.long()
    out = 0
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out = out + wx * wy * wz * _hash(iq[:, 0] + dx, iq[:, 1] + dy, iq[:, 2] + dz, seed)
    return out


def _band(cell, fp):
    """Weight of a texture feature of size `cell` at pixel footprint fp [P]:
    1 when it spans >= 4 pixels, 0 when <= 2 (it would alias)."""
    return ((cell / fp.clamp(min=1e-6) - 2.0) / 2.0).clamp(0, 1)


def _stripe(x, centre, half_width, fp):
    """Box-filtered indicator of |x - centre| < half_width, ramps one footprint wide."""
    return ((half_width - (x - centre).abs()) / fp.clamp(min=1e-3) + 0.5).clamp(0, 1)


def _periodic(s, period, duty, fp):
    """Box-filtered square wave (fraction `duty` of each period on), faded to its
    mean `duty` where the period spans fewer than ~4 footprints."""
    q = torch.remainder(s / period, 1.0) - 0.5
    on = ((duty / 2 - q.abs()) * period / fp.clamp(min=1e-3) + 0.5).clamp(0, 1)
    k = _band(period, fp)
    return k * on + (1 - k) * duty


# -------------------------------------------------------------- intersect
def _update(best, t, kind, normal, colour, hit):
    """Keep the nearer hit. best: dict of [P] t, [P] kind, [P,3] n, [P,3] colour."""
    closer = hit & (t < best["t"])
    best["t"] = torch.where(closer, t, best["t"])
    best["kind"] = torch.where(closer, kind, best["kind"])
    best["n"] = torch.where(closer[:, None], normal, best["n"])
    best["col"] = torch.where(closer[:, None], colour, best["col"])


def _boxes(best, d, inv_d, lo, hi, col, kind):
    """Slab test. d, inv_d: [P,3]; lo, hi, col: [n,3]; kind: [n]."""
    for s in range(0, lo.shape[0], _CHUNK):
        l, h = lo[s:s + _CHUNK, None], hi[s:s + _CHUNK, None]         # [n,1,3]
        t0, t1 = l * inv_d, h * inv_d                                  # [n,P,3]
        tn, tf = torch.minimum(t0, t1), torch.maximum(t0, t1)
        tnear, axis = tn.max(dim=2)                                    # [n,P]
        tfar = tf.min(dim=2).values
        hit = (tnear <= tfar) & (tnear > _EPS)
        tnear = torch.where(hit, tnear, torch.full_like(tnear, math.inf))
        t, j = tnear.min(dim=0)                                        # nearest box per pixel
        ax = axis.gather(0, j[None])[0]                                # [P]
        n = torch.zeros_like(d)
        n.scatter_(1, ax[:, None], -torch.sign(d.gather(1, ax[:, None])))
        gi = j + s
        _update(best, t, kind[gi], n, col[gi], torch.isfinite(t))


def _cylinders(best, d, c, r, yr, col, kind):
    """Vertical cylinders (no caps). c: [n,2] (x, z); r: [n]; yr: [n,2]."""
    a = (d[:, 0] ** 2 + d[:, 2] ** 2).clamp(min=1e-12)                # [P]
    for s in range(0, c.shape[0], _CHUNK):
        cx, cz = c[s:s + _CHUNK, 0:1], c[s:s + _CHUNK, 1:2]              # [n,1]
        rr = r[s:s + _CHUNK, None]
        b = -2 * (d[:, 0] * cx + d[:, 2] * cz)                          # [n,P]
        cc = cx ** 2 + cz ** 2 - rr ** 2
        disc = b * b - 4 * a * cc
        t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
        y = t * d[:, 1]
        hit = (disc > 0) & (t > _EPS) & (y >= yr[s:s + _CHUNK, 0:1]) & (y <= yr[s:s + _CHUNK, 1:2])
        t = torch.where(hit, t, torch.full_like(t, math.inf))
        t, j = t.min(dim=0)
        gi = j + s
        px, pz = t * d[:, 0] - c[gi, 0], t * d[:, 2] - c[gi, 1]
        n = torch.stack([px, torch.zeros_like(px), pz], 1) / r[gi, None]
        _update(best, t, kind[gi], n, col[gi], torch.isfinite(t))


def _spheres(best, d, c, r, col):
    a = (d * d).sum(1)                                                  # [P]
    for s in range(0, c.shape[0], _CHUNK):
        cs, rs = c[s:s + _CHUNK], r[s:s + _CHUNK]
        b = -2 * (cs @ d.T)                                             # [n,P]
        cc = (cs * cs).sum(1, keepdim=True) - rs[:, None] ** 2
        disc = b * b - 4 * a * cc
        t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
        hit = (disc > 0) & (t > _EPS)
        t = torch.where(hit, t, torch.full_like(t, math.inf))
        t, j = t.min(dim=0)
        gi = j + s
        n = (t[:, None] * d - c[gi]) / r[gi, None]
        _update(best, t, torch.full_like(j, KIND_CROWN), n, col[gi], torch.isfinite(t))


def _visible(lo, hi, R, p, far):
    """[n] bool: boxes (world lo, hi [n,3]) not entirely behind the camera or beyond far."""
    corners = np.stack([np.stack([np.where(m & 1, hi[:, 0], lo[:, 0]),
                                  np.where(m & 2, hi[:, 1], lo[:, 1]),
                                  np.where(m & 4, hi[:, 2], lo[:, 2])], 1) for m in range(8)], 1)
    z = (corners - p) @ R[:, 2]                                         # [n,8] camera z
    return (z.max(1) > 0) & (z.min(1) < far)


# ----------------------------------------------------------------- shade
def _shade(X, n, kind, col, fp, road_w, seed):
    """Albedo [P,3] from the world point X [P,3], normal n [P,3], kind [P], object colour."""
    out = col.clone()
    g = kind == KIND_GROUND
    if g.any():
        x, z, f = X[g, 0], X[g, 2], fp[g]
        ax = x.abs()
        tex = (0.5 * _band(2.0, f) * (noise2(x, z, 2.0, seed) - 0.5)
               + 0.5 * _band(0.7, f) * (noise2(x, z, 0.7, seed + 1) - 0.5))
        asphalt = (0.33 + 0.25 * tex)[:, None] * torch.tensor([1.0, 1.0, 1.05])
        line = torch.maximum(_stripe(ax, road_w - 0.35, 0.08, f),
                             _stripe(ax, 1.8, 0.07, f) * _periodic(z, 9.0, 0.4, f))
        asphalt = torch.lerp(asphalt, torch.full_like(asphalt, 0.92), line[:, None])
        walk = (0.58 + 0.3 * tex)[:, None] * torch.tensor([1.0, 0.97, 0.92])
        grass = (0.85 + 0.8 * tex)[:, None] * torch.tensor([0.30, 0.45, 0.18])
        on_walk = _stripe(ax, road_w + 1.0, 1.0, f)[:, None]
        beyond = (((ax - road_w - 2.0) / f.clamp(min=1e-3)) + 0.5).clamp(0, 1)[:, None]
        base = torch.lerp(asphalt, walk, on_walk)
        out[g] = torch.lerp(base, grass, beyond)
    m = kind == KIND_FACADE
    if m.any():
        Xm, f, nm = X[m], fp[m], n[m]
        s = torch.where(nm[:, 0].abs() > 0.5, Xm[:, 2], Xm[:, 0])      # along the wall
        tex = 0.5 * _band(1.5, f) * (noise3(Xm, 1.5, seed + 2) - 0.5)
        win = _periodic(s, 3.0, 0.55, f) * _periodic(Xm[:, 1] - GROUND_Y, 3.2, 0.45, f)
        wall = col[m] * (0.9 + 0.4 * tex)[:, None]
        glass = torch.tensor([0.18, 0.22, 0.30]) * (1.0 + 0.6 * tex)[:, None]
        out[m] = torch.lerp(wall, glass, (win * (nm[:, 1].abs() < 0.5))[:, None])
    m = kind == KIND_CAR
    if m.any():
        Xm, f = X[m], fp[m]
        h = GROUND_Y - Xm[:, 1]
        band = _stripe(h, 1.15, 0.2, f)
        tex = 0.5 * _band(0.8, f) * (noise3(Xm, 0.8, seed + 3) - 0.5)
        body = col[m] * (0.9 + 0.3 * tex)[:, None]
        out[m] = torch.lerp(body, torch.full_like(body, 0.12), band[:, None])
    for k, cell, amp in ((KIND_POLE, 1.0, 0.2), (KIND_TRUNK, 0.3, 0.6), (KIND_CROWN, 0.6, 0.9)):
        m = kind == k
        if m.any():
            tex = _band(cell, fp[m]) * (noise3(X[m], cell, seed + 4 + k) - 0.5)
            out[m] = col[m] * (1.0 + amp * tex)[:, None]
    light = 0.55 + 0.45 * (n @ _SUN).clamp(min=0)
    return (out * light[:, None]).clamp(0, 1)


def _sky(dn):
    """Sky colour [P,3] from unit ray directions dn [P,3] (y down)."""
    e = (-dn[:, 1] * 3.0).clamp(0, 1)[:, None]
    return torch.lerp(torch.tensor([0.86, 0.89, 0.93]), torch.tensor([0.38, 0.57, 0.86]), e)


def render(scene, world_from_camera, K, H, W, far=FAR):
    """Render one frame.

    world_from_camera: [4,4] numpy float64; K: [3,3] numpy (pixel centres at
    integers). Returns rgb [3,H,W] float32 in [0,1] and depth [1,H,W] float32
    (metric camera z; 0 = sky / beyond `far`).
    """
    T = np.asarray(world_from_camera, np.float64)
    R, p = T[:3, :3], T[:3, 3]
    K = np.asarray(K, np.float64)
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64),
                       indexing="ij")
    dc = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    dc[..., 0] -= dc[..., 1] * K[0, 1] / K[0, 0]                        # skew (0 usually)
    d = torch.from_numpy((dc.reshape(-1, 3) @ R.T).astype(np.float32))  # [P,3] world dirs
    P = d.shape[0]
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    inv_d = 1.0 / safe
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    best = {"t": torch.full((P,), math.inf), "kind": torch.full((P,), KIND_SKY, dtype=torch.long),
            "n": torch.zeros(P, 3), "col": torch.zeros(P, 3)}
    # ground plane y = GROUND_Y (ray origin at the camera)
    tg = (GROUND_Y - p[1]) / safe[:, 1]
    up = torch.tensor([0.0, -1.0, 0.0]).expand(P, 3)
    _update(best, tg, torch.full((P,), KIND_GROUND), up, torch.zeros(P, 3), d[:, 1] > 1e-9)
    sc = scene
    vis = _visible(sc.boxes_lo, sc.boxes_hi, R, p, far)
    if vis.any():
        _boxes(best, d, inv_d, f32(sc.boxes_lo[vis] - p), f32(sc.boxes_hi[vis] - p),
               f32(sc.boxes_col[vis]), torch.from_numpy(sc.boxes_kind[vis]))
    if len(sc.cyl_r):
        lo = np.stack([sc.cyl_c[:, 0] - sc.cyl_r, sc.cyl_y[:, 0], sc.cyl_c[:, 1] - sc.cyl_r], 1)
        hi = np.stack([sc.cyl_c[:, 0] + sc.cyl_r, sc.cyl_y[:, 1], sc.cyl_c[:, 1] + sc.cyl_r], 1)
        cv = _visible(lo, hi, R, p, far)
        if cv.any():
            _cylinders(best, d, f32(sc.cyl_c[cv] - p[[0, 2]]), f32(sc.cyl_r[cv]),
                       f32(sc.cyl_y[cv] - p[1]), f32(sc.cyl_col[cv]),
                       torch.from_numpy(sc.cyl_kind[cv]))
    if len(sc.sph_r):
        r = sc.sph_r[:, None]
        sv = _visible(sc.sph_c - r, sc.sph_c + r, R, p, far)
        if sv.any():
            _spheres(best, d, f32(sc.sph_c[sv] - p), f32(sc.sph_r[sv]), f32(sc.sph_col[sv]))
    t = best["t"]
    hit = torch.isfinite(t) & (t <= far)
    dn = d / d.norm(dim=1, keepdim=True)
    rgb = _sky(dn)
    if hit.any():
        th = t[hit]
        X = th[:, None] * d[hit] + f32(p)                               # world points [Ph,3]
        n = best["n"][hit]
        cos = (n * dn[hit]).sum(1).abs().clamp(min=0.15)
        fx = 0.5 * (K[0, 0] + K[1, 1])
        fp = th * d[hit].norm(dim=1) / fx / cos                         # metres per pixel
        rgb[hit] = _shade(X, n, best["kind"][hit], best["col"][hit], fp, sc.road_w, sc.tex_seed)
    depth = torch.where(hit, t, torch.zeros_like(t))
    return rgb.T.reshape(3, H, W).contiguous(), depth.view(1, H, W)
