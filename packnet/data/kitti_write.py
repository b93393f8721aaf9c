"""Write SyntheticDriving sequences in the KITTI raw layout (how the KITTI
loader is tested, and a way to feed KITTI tooling with synthetic data).

    <root>/<date>/calib_cam_to_cam.txt    P_rect_02 = K [I | b], R_rect_00, S_rect_02, ...
    <root>/<date>/calib_velo_to_cam.txt   R, T: velodyne -> unrectified camera 0
    <root>/<date>/calib_imu_to_velo.txt   R, T: imu -> velodyne
    <root>/<date>/<date>_drive_<NNNN>_sync/
        image_02/data/<%010d>.png, image_02/timestamps.txt
        oxts/data/<%010d>.txt (30 fields), oxts/timestamps.txt
        velodyne_points/data/<%010d>.bin (float32 x y z reflectance), .../timestamps.txt
    <root>/eigen_test_files.txt   "<date>/<drive> <frame> l"           (monodepth2 / Eigen)
    <root>/eigen_zhou_files.txt   "<date>/<drive>/image_02/data/<f>.png <.. image_03 ..>" (PackNet)
    <root>/zhou_train.txt         "<drive>_02 <%010d>"                  (SfMLearner / Zhou)

The rendered camera is rectified camera 2. Calibration chain (KITTI's):
    x_rect0 = R_rect_00 (R X_velo + T),   pixel ~ P_rect_02 [x_rect0; 1],
    depth = (P_rect_02 [x_rect0; 1])_z = camera-2 z, because P_rect_02 = K [I | b].
Velodyne points are pixel centres of the exact depth map (a subset of rows,
like a scanner's beams, randomly thinned) pushed back through that chain,
plus a few points behind the sensor that a loader must discard.
oxts: world z = north, x = east, -y = up around lat/lon (49.011, 8.416)
(KITTI's Mercator, scale cos(lat0)); yaw 0 = east, counter-clockwise;
pitch positive = nose down; vf/vl/vu = the camera velocity in the vehicle
frame; accelerations 0; wz/wu = yaw rate.
"""
import math
import os

import numpy as np

from .io import write_rgb
from .scene import rot_x, rot_y
from .synthetic import SyntheticDriving

__all__ = ["write_kitti", "CALIB"]

_B = np.array([0.06, 0.0003, 0.0027])   # camera 2 centre offset in rectified camera 0 (m)
_VELO_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # velo -> cam axes
CALIB = {
    "R_rect_00": rot_x(0.004) @ rot_y(-0.003),
    "R_velo_to_cam": rot_y(0.01) @ rot_x(-0.006) @ _VELO_AXES,
    "T_velo_to_cam": np.array([-0.0041, -0.0763, -0.2718]),
    "R_imu_to_velo": rot_x(0.001) @ rot_y(0.002),
    "T_imu_to_velo": np.array([-0.8086, 0.3195, -0.7997]),
}
_LAT0, _LON0, _ALT0, _ER = 49.011, 8.416, 115.0, 6378137.0


def _fmt(a):
    return " ".join(f"{float(x):.12e}" for x in np.ravel(a))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _calib_files(date_dir, K, H, W):
    P2 = K @ np.concatenate([np.eye(3), _B[:, None]], 1)
    P0 = np.concatenate([K, np.zeros((3, 1))], 1)
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam, P in (("00", P0), ("02", P2)):
        lines += [f"S_{cam}: {_fmt([W, H])}", f"K_{cam}: {_fmt(K)}", f"D_{cam}: {_fmt(np.zeros(5))}",
                  f"R_{cam}: {_fmt(np.eye(3))}", f"T_{cam}: {_fmt(P[:, 3] if cam == '00' else _B)}",
                  f"S_rect_{cam}: {_fmt([W, H])}", f"R_rect_{cam}: {_fmt(CALIB['R_rect_00'])}",
                  f"P_rect_{cam}: {_fmt(P)}"]
    _write(os.path.join(date_dir, "calib_cam_to_cam.txt"), "\n".join(lines) + "\n")
    _write(os.path.join(date_dir, "calib_velo_to_cam.txt"),
           f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(CALIB['R_velo_to_cam'])}\n"
           f"T: {_fmt(CALIB['T_velo_to_cam'])}\ndelta_f: 0 0\ndelta_c: 0 0\n")
    _write(os.path.join(date_dir, "calib_imu_to_velo.txt"),
           f"calib_time: 25-May-2012 16:47:16\nR: {_fmt(CALIB['R_imu_to_velo'])}\n"
           f"T: {_fmt(CALIB['T_imu_to_velo'])}\n")


def _oxts_line(traj, i):
    T = traj.world_from_camera(i)
    east, up, north = T[0, 3], -T[1, 3], T[2, 3]
    scale = math.cos(math.radians(_LAT0))
    mx = scale * _LON0 * math.pi * _ER / 180 + east
    my = scale * _ER * math.log(math.tan((90 + _LAT0) * math.pi / 360)) + north
    lon = mx * 180 / (math.pi * _ER * scale)
    lat = 360 / math.pi * math.atan(math.exp(my / (_ER * scale))) - 90
    t = traj.timestamp(i)
    psi = float(traj.yaw(t))
    yaw_rate = traj.yaw_amp * traj.yaw_w * math.cos(traj.yaw_w * t + traj.yaw_ph)
    vw = traj.velocity_world(i)
    vf, vl, vu = traj.velocity_vehicle(i)
    fields = [lat, lon, _ALT0 + up, 0.0, -float(traj.pitch(t)), math.pi / 2 - psi,
              vw[2], vw[0], vf, vl, vu, 0, 0, 0, 0, 0, 0, 0, 0, -yaw_rate, 0, 0, -yaw_rate,
              0.02, 0.02, 4, 10, 4, 4, 0]
    assert len(fields) == 30
    return " ".join(repr(float(f)) if k < 25 else str(int(f)) for k, f in enumerate(fields))


def _stamp(seconds):
    """KITTI timestamp line, e.g. 2011-09-26 13:02:25.964389445 (start 13:02:25)."""
    s = 13 * 3600 + 2 * 60 + 25.0 + seconds
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"2011-09-26 {int(h):02d}:{int(m):02d}:{sec:012.9f}"


def _velodyne(depth, K, rng, rows):
    """Points [N,4] float32 (velodyne frame) from pixel centres of depth [H,W]."""
    H, W = depth.shape
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    keep = np.zeros((H, W), bool)
    keep[::rows] = rng.random((len(range(0, H, rows)), W)) < 0.5
    keep &= depth > 0
    z = depth[keep].astype(np.float64)
    X = np.stack([(u[keep] - K[0, 2]) / K[0, 0] * z, (v[keep] - K[1, 2]) / K[1, 1] * z, z], 1)
    Xc0 = (X - _B) @ CALIB["R_rect_00"]                       # rectified cam0 -> cam0: R^T x
    Xv = (Xc0 - CALIB["T_velo_to_cam"]) @ CALIB["R_velo_to_cam"]  # cam0 -> velodyne
    behind = np.stack([-rng.uniform(2, 20, 16), rng.uniform(-5, 5, 16), rng.uniform(-1, 1, 16)], 1)
    pts = np.concatenate([Xv, behind])
    refl = rng.random((len(pts), 1))
    return np.concatenate([pts, refl], 1).astype(np.float32)


def write_kitti(root, num_sequences=2, frames_per_sequence=5, size="64x192", seed=0,
                split="train", date="2011_09_26", first_drive=1, lidar_row_step=2):
    """Render `num_sequences` SyntheticDriving sequences into `root` (KITTI raw
    layout, see the module docstring). Returns a dict: dataset (the
    SyntheticDriving they come from: sequence s is drive first_drive + s),
    drives (relative drive paths), split_files (name -> path)."""
    ds = SyntheticDriving(split, size, num_sequences=num_sequences,
                          frames_per_sequence=frames_per_sequence, seed=seed, cache_frames=0)
    date_dir = os.path.join(root, date)
    _calib_files(date_dir, ds.K, ds.H, ds.W)
    drives, eigen, packnet, zhou = [], [], [], []
    for s in range(num_sequences):
        name = f"{date}_drive_{first_drive + s:04d}_sync"
        drive = os.path.join(date_dir, name)
        _, traj = ds.sequence(s)
        rng = np.random.default_rng(np.random.SeedSequence(ds.sequence_seed(s) + (7,)))
        stamps = []
        for i in range(frames_per_sequence):
            rgb, depth = ds.frame(s, i)
            f = f"{i:010d}"
            write_rgb(os.path.join(drive, "image_02", "data", f + ".png"), rgb)
            _write(os.path.join(drive, "oxts", "data", f + ".txt"), _oxts_line(traj, i) + "\n")
            pts = _velodyne(depth[0].numpy(), ds.K, rng, lidar_row_step)
            vdir = os.path.join(drive, "velodyne_points", "data")
            os.makedirs(vdir, exist_ok=True)
            pts.tofile(os.path.join(vdir, f + ".bin"))
            stamps.append(_stamp(traj.timestamp(i)))
        for sub in ("image_02", "oxts", "velodyne_points"):
            _write(os.path.join(drive, sub, "timestamps.txt"), "\n".join(stamps) + "\n")
        rel = f"{date}/{name}"
        drives.append(rel)
        for i in ds.targets:
            eigen.append(f"{rel} {i} l")
            packnet.append(f"{rel}/image_02/data/{i:010d}.png {rel}/image_03/data/{i:010d}.png")
            zhou.append(f"{name}_02 {i:010d}")
    split_files = {}
    for fname, lines in (("eigen_test_files.txt", eigen), ("eigen_zhou_files.txt", packnet),
                         ("zhou_train.txt", zhou)):
        split_files[fname] = os.path.join(root, fname)
        _write(split_files[fname], "\n".join(lines) + "\n")
    return {"dataset": ds, "drives": drives, "split_files": split_files}
