"""Procedural driving scenes and camera trajectories (deterministic from a seed).

World frame = camera convention of KITTI/PackNet: x right, y down, z forward.
The ground is the plane y = +GROUND_Y (the camera rides ~1.65 m above it).

A Scene holds flat numpy arrays of primitives:
  boxes      [Nb,3] lo, [Nb,3] hi, [Nb,3] colour, [Nb] kind (KIND_FACADE, KIND_CAR)
  cylinders  [Nc,2] centre (x, z), [Nc] radius, [Nc,2] y range, [Nc,3] colour, [Nc] kind
  spheres    [Ns,3] centre, [Ns] radius, [Ns,3] colour
plus road half width and a texture seed.

A Trajectory gives, for frame i at FPS Hz, world_from_camera [4,4] (float64),
the timestamp, and the velocity (world frame and vehicle frame). Speed varies
smoothly in [~5, ~15] m/s, heading (yaw) oscillates by a few hundredths of a
radian and the camera bumps vertically by a few centimetres with small pitch.
"""
import math

import numpy as np

GROUND_Y = 1.65           # camera height above the road, metres (KITTI's)
FPS = 10.0                # frames per second (KITTI raw)
KIND_SKY, KIND_GROUND, KIND_FACADE, KIND_CAR, KIND_POLE, KIND_TRUNK, KIND_CROWN = range(7)


class Scene:
    def __init__(self, road_w, boxes_lo, boxes_hi, boxes_col, boxes_kind, cyl_c, cyl_r, cyl_y,
                 cyl_col, cyl_kind, sph_c, sph_r, sph_col, tex_seed):
        self.road_w = road_w
        self.boxes_lo, self.boxes_hi, self.boxes_col, self.boxes_kind = (
            boxes_lo, boxes_hi, boxes_col, boxes_kind)
        self.cyl_c, self.cyl_r, self.cyl_y, self.cyl_col, self.cyl_kind = (
            cyl_c, cyl_r, cyl_y, cyl_col, cyl_kind)
        self.sph_c, self.sph_r, self.sph_col = sph_c, sph_r, sph_col
        self.tex_seed = tex_seed


def make_scene(rng, z_min, z_max):
    """Random street between z_min and z_max (metres) from a numpy Generator."""
    road_w = float(rng.uniform(5.5, 7.5))       # half width of the asphalt
    walk = 2.0                                   # sidewalk/verge width beyond the road
    lo, hi, col, kind = [], [], [], []
    for side in (-1.0, 1.0):
        # ---- facades: a row of buildings with gaps and varying setbacks
        z = z_min + rng.uniform(-5, 5)
        while z < z_max:
            length = rng.uniform(8.0, 25.0)
            setback = rng.uniform(0.5, 9.0)
            depth = rng.uniform(8.0, 15.0)
            height = rng.uniform(5.0, 18.0)
            x_near = road_w + walk + setback
            xa, xb = (x_near, x_near + depth) if side > 0 else (-x_near - depth, -x_near)
            lo.append([xa, GROUND_Y - height, z])
            hi.append([xb, GROUND_Y, z + length])
            base = rng.choice(np.array([[0.75, 0.62, 0.50], [0.65, 0.65, 0.68], [0.80, 0.75, 0.62],
                                        [0.60, 0.42, 0.35], [0.72, 0.70, 0.58]]))
            col.append(np.clip(base + rng.uniform(-0.06, 0.06, 3), 0, 1))
            kind.append(KIND_FACADE)
            z += length + (rng.uniform(1.0, 6.0) if rng.random() < 0.4 else 0.0)
        # ---- parked cars along the kerb
        z = z_min + rng.uniform(0, 10)
        while z < z_max:
            z += rng.uniform(6.0, 25.0)
            w, h, l = rng.uniform(1.6, 1.9), rng.uniform(1.3, 1.7), rng.uniform(3.8, 4.8)
            xc = side * (road_w - 0.2 - w / 2 - rng.uniform(0.0, 0.3))
            lo.append([xc - w / 2, GROUND_Y - h, z])
            hi.append([xc + w / 2, GROUND_Y, z + l])
            col.append(rng.uniform(0.1, 0.9, 3))
            kind.append(KIND_CAR)
            z += l
    cyl_c, cyl_r, cyl_y, cyl_col, cyl_kind = [], [], [], [], []
    sph_c, sph_r, sph_col = [], [], []
    for side in (-1.0, 1.0):
        # ---- poles (street lights) on the sidewalk
        for z in np.arange(z_min + rng.uniform(0, 20), z_max, rng.uniform(18.0, 30.0)):
            cyl_c.append([side * (road_w + 0.5), z])
            cyl_r.append(rng.uniform(0.08, 0.14))
            cyl_y.append([GROUND_Y - rng.uniform(5.0, 8.0), GROUND_Y])
            cyl_col.append([0.45, 0.45, 0.47])
            cyl_kind.append(KIND_POLE)
        # ---- trees: trunk + spherical crown
        z = z_min + rng.uniform(0, 15)
        while z < z_max:
            r_crown = rng.uniform(1.0, 2.0)
            trunk_h = rng.uniform(2.0, 3.2)
            x = side * (road_w + 1.3)
            cyl_c.append([x, z])
            cyl_r.append(rng.uniform(0.15, 0.25))
            cyl_y.append([GROUND_Y - trunk_h - r_crown, GROUND_Y])
            cyl_col.append([0.40, 0.28, 0.18])
            cyl_kind.append(KIND_TRUNK)
            sph_c.append([x, GROUND_Y - trunk_h - 0.7 * r_crown, z])
            sph_r.append(r_crown)
            sph_col.append(np.clip([0.25, 0.50, 0.18] + rng.uniform(-0.05, 0.05, 3), 0, 1))
            z += rng.uniform(10.0, 30.0)
    f = lambda a, n: np.asarray(a, dtype=np.float64).reshape(-1, n)  # noqa: E731
    return Scene(road_w, f(lo, 3), f(hi, 3), f(col, 3), np.asarray(kind, np.int64),
                 f(cyl_c, 2), f(cyl_r, 1)[:, 0], f(cyl_y, 2), f(cyl_col, 3),
                 np.asarray(cyl_kind, np.int64), f(sph_c, 3), f(sph_r, 1)[:, 0], f(sph_col, 3),
                 int(rng.integers(0, 2 ** 31 - 1)))


def rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


class Trajectory:
    """Smooth analytic motion; positions integrated on a fine grid (1 ms)."""

    def __init__(self, rng, num_frames, fps=FPS):
        self.fps, self.num_frames = fps, num_frames
        self.s0, self.s_amp = rng.uniform(8.0, 11.0), rng.uniform(1.5, 4.0)
        self.s_w, self.s_ph = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * math.pi)
        self.yaw_amp, self.yaw_w, self.yaw_ph = (rng.uniform(0.01, 0.04), rng.uniform(0.3, 0.8),
                                                 rng.uniform(0, 2 * math.pi))
        self.bump_amp, self.bump_w, self.bump_ph = (rng.uniform(0.01, 0.04), rng.uniform(4.0, 9.0),
                                                    rng.uniform(0, 2 * math.pi))
        self.pitch_amp = rng.uniform(0.002, 0.008)
        self.x0 = rng.uniform(-1.0, 1.0)   # lateral start (lane position)
        self.t_end = (num_frames - 1) / fps
        steps = int(round(self.t_end * 1000)) + 1
        ts = np.linspace(0.0, self.t_end, steps) if steps > 1 else np.zeros(1)
        vx, vz = self._vel_xz(ts)
        dt = ts[1] - ts[0] if steps > 1 else 0.0
        cum = lambda v: np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) * dt / 2)])  # noqa
        self._ts, self._x, self._z = ts, self.x0 + cum(vx), cum(vz)

    def speed_scalar(self, t):
        return self.s0 + self.s_amp * np.sin(self.s_w * t + self.s_ph)

    def yaw(self, t):
        return self.yaw_amp * np.sin(self.yaw_w * t + self.yaw_ph)

    def _vel_xz(self, t):
        s, y = self.speed_scalar(t), self.yaw(t)
        return s * np.sin(y), s * np.cos(y)

    def bump(self, t):  # y offset (down positive) and its derivative
        a = self.bump_w * t + self.bump_ph
        return self.bump_amp * np.sin(a), self.bump_amp * self.bump_w * np.cos(a)

    def pitch(self, t):
        return self.pitch_amp * np.sin(self.bump_w * t + self.bump_ph + 1.0)

    def timestamp(self, i):
        return i / self.fps

    def world_from_camera(self, i):
        """[4,4] float64: camera point -> world point for frame i."""
        t = self.timestamp(i)
        k = int(round(t * 1000))
        T = np.eye(4)
        T[:3, :3] = rot_y(float(self.yaw(t))) @ rot_x(float(self.pitch(t)))
        T[:3, 3] = [self._x[k], self.bump(t)[0], self._z[k]]
        return T

    def velocity_world(self, i):
        """[3] metres per second in the world frame (x right, y down, z forward)."""
        t = self.timestamp(i)
        vx, vz = self._vel_xz(t)
        return np.array([vx, self.bump(t)[1], vz])

    def velocity_vehicle(self, i):
        """(vf, vl, vu): forward, leftward, upward velocity in the vehicle frame,
        as KITTI's oxts report them (vehicle = camera axes: forward z, left -x, up -y)."""
        R = self.world_from_camera(i)[:3, :3]
        v = R.T @ self.velocity_world(i)
        return np.array([v[2], -v[0], -v[1]])

    def speed(self, i):
        return float(np.linalg.norm(self.velocity_world(i)))

    def travel(self):
        return float(self._z[-1])


def make_sequence(seed, num_frames, fps=FPS):
    """(Scene, Trajectory) for one sequence; `seed` is an int or a tuple of ints."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    traj = Trajectory(rng, num_frames, fps)
    scene = make_scene(rng, -40.0, traj.travel() + 160.0)
    return scene, traj


def target_to_context(traj, t, c):
    """[4,4] float64 pose mapping target-camera (frame t) points to context (frame c)."""
    return np.linalg.inv(traj.world_from_camera(c)) @ traj.world_from_camera(t)
