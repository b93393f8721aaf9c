"""packnet.models: the release's state_dict layout, parameter and MAC counts,
forward/backward on small images, backend agreement, checkpoint round trips
and input checks. Kept small: the machine is shared and has no GPU.

The expected state_dict layouts below are written out from the release's
architecture (PackNet01.py, PackNetSlim01.py, layers01.py, PoseNet.py), not
from packnet.models, so a renamed module or a wrong width fails here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import packops
from packnet import geometry
from packnet.models import (PackNet01, PackNetSlim01, PackNetTiny, PoseNet, count_flops_and_params,
                            count_params, strip_prefix, summary)

from _assert import assert_close

H, W = 64, 64  # the smallest size that five packings by 2 allow twice over


# ------------------------------------------------------ expected layouts
def _conv2d_block(p, cin, cout, k):
    # layers.Conv2D / release Conv2D: conv_base + GroupNorm (pad, ELU have no state)
    return {f"{p}.conv_base.weight": (cout, cin, k, k), f"{p}.conv_base.bias": (cout,),
            f"{p}.normalize.weight": (cout,), f"{p}.normalize.bias": (cout,)}


def _conv3d(p, d):
    return {f"{p}.conv3d.weight": (d, 1, 3, 3, 3), f"{p}.conv3d.bias": (d,)}


def _residual_block(p, cin, cout, n, dropout):
    out = {}
    for i in range(n):
        q, c = f"{p}.{i}", cin if i == 0 else cout
        out.update(_conv2d_block(f"{q}.conv1", c, cout, 3))
        out.update(_conv2d_block(f"{q}.conv2", cout, cout, 3))
        sc = f"{q}.conv3.0" if dropout else f"{q}.conv3"  # Sequential(conv, Dropout2d)
        out.update({f"{sc}.weight": (cout, c, 1, 1), f"{sc}.bias": (cout,),
                    f"{q}.normalize.weight": (cout,), f"{q}.normalize.bias": (cout,)})
    return out


# Per network: ni, encoder widths n1..n5, 3D features d, unpack1..5 output
# widths and iconv1..5 input widths (skips concatenated in A, added in B;
# the inverse depth of the coarser scale adds one channel at iconv3..1).
LAYOUTS = {
    "1A": dict(ni=64, n=(64, 64, 128, 256, 512), d=8,
               unpack_out=(64, 64, 128, 256, 512), iconv_in=(129, 129, 193, 384, 768)),
    "1B": dict(ni=64, n=(64, 64, 128, 256, 512), d=8,
               unpack_out=(64, 64, 64, 128, 256), iconv_in=(65, 65, 65, 128, 256)),
    "slim": dict(ni=32, n=(32, 64, 128, 256, 512), d=4,
                 unpack_out=(32, 64, 128, 256, 512), iconv_in=(65, 97, 193, 384, 768)),
}


def expected_packnet(layout, dropout=False):
    """{key: shape} of the release's PackNet01 / PackNetSlim01 state_dict."""
    L = LAYOUTS[layout]
    ni, n, d = L["ni"], L["n"], L["d"]
    out = _conv2d_block("pre_calc", 3, ni, 5)
    for i, k in enumerate((5, 3, 3, 3, 3)):
        c = n[i]
        out.update(_conv2d_block(f"pack{i + 1}.conv", 4 * d * c, c, k))
        out.update(_conv3d(f"pack{i + 1}", d))
    out.update(_conv2d_block("conv1", ni, n[0], 7))
    for i, blocks in enumerate((2, 2, 3, 3)):
        out.update(_residual_block(f"conv{i + 2}", n[i], n[i + 1], blocks, dropout))
    unpack_in = (n[1], n[2], n[3], n[4], n[4])  # unpack5 reads pack5 (n5), unpackN iconvN+1
    for i in range(5):
        out.update(_conv2d_block(f"unpack{i + 1}.conv", unpack_in[i],
                                 L["unpack_out"][i] * 4 // d, 3))
        out.update(_conv3d(f"unpack{i + 1}", d))
        out.update(_conv2d_block(f"iconv{i + 1}", L["iconv_in"][i], n[i], 3))
    for i in range(4):
        out.update({f"disp{i + 1}_layer.conv1.weight": (1, n[i], 3, 3),
                    f"disp{i + 1}_layer.conv1.bias": (1,)})
    return out


def expected_posenet(nb_ref_imgs=2):
    out, cin = {}, 3 * (1 + nb_ref_imgs)
    for i, (c, k) in enumerate(zip((16, 32, 64, 128, 256, 256, 256), (7, 5, 3, 3, 3, 3, 3))):
        out.update({f"conv{i + 1}.0.weight": (c, cin, k, k), f"conv{i + 1}.0.bias": (c,),
                    f"conv{i + 1}.1.weight": (c,), f"conv{i + 1}.1.bias": (c,)})
        cin = c
    out.update({"pose_pred.weight": (6 * nb_ref_imgs, 256, 1, 1),
                "pose_pred.bias": (6 * nb_ref_imgs,)})
    return out


def _layout(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _assert_layout(model, expected):
    got = _layout(model)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:8]}, unexpected {extra[:8]}"
    wrong = {k: (got[k], s) for k, s in expected.items() if got[k] != s}
    assert not wrong, f"shape (got, expected): {dict(list(wrong.items())[:8])}"


# ------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def net_1a():
    torch.manual_seed(0)
    return PackNet01("1A")


@pytest.fixture(scope="module")
def net_1b():
    torch.manual_seed(1)
    return PackNet01("1B")


@pytest.fixture(scope="module")
def net_slim():
    torch.manual_seed(2)
    return PackNetSlim01()


def _image(b=1, h=H, w=W, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------- layouts, counts
def test_layout_1a(net_1a):
    _assert_layout(net_1a, expected_packnet("1A"))


def test_layout_1b(net_1b):
    _assert_layout(net_1b, expected_packnet("1B"))


def test_layout_slim(net_slim):
    _assert_layout(net_slim, expected_packnet("slim"))


def test_layout_dropout_shortcut():
    # The release wraps the shortcut in Sequential(conv, Dropout2d) -> conv3.0.*
    _assert_layout(PackNetSlim01(dropout=0.5), expected_packnet("slim", dropout=True))


@pytest.mark.parametrize("nb_ref_imgs", [1, 2, 4])
def test_layout_posenet(nb_ref_imgs):
    _assert_layout(PoseNet(nb_ref_imgs), expected_posenet(nb_ref_imgs))


def test_parameter_counts(net_1a, net_1b, net_slim):
    counts = {"1A": count_params(net_1a), "1B": count_params(net_1b),
              "slim": count_params(net_slim), "pose": count_params(PoseNet())}
    assert f"{counts['1A'] / 1e6:.2f}M" == "128.29M"  # the count PackNet-SfM reports for 1A
    for name, expected in (("1A", expected_packnet("1A")), ("1B", expected_packnet("1B")),
                           ("slim", expected_packnet("slim")), ("pose", expected_posenet())):
        normalised = sum(math.prod(s) for s in expected.values())
        assert counts[name] == normalised, name
    assert counts == {"1A": 128294020, "1B": 124164580, "slim": 76997796, "pose": 1592684}


def _expected_macs(layout, h, w):
    """Conv multiply-accumulates of one forward at h x w, from the layout alone."""
    L, shapes = LAYOUTS[layout], expected_packnet(layout)
    d, n = L["d"], L["n"]

    def area(level):
        return (h >> level) * (w >> level)

    def conv2d(key, level):
        co, ci, kh, kw = shapes[key]
        return co * ci * kh * kw * area(level)

    macs = conv2d("pre_calc.conv_base.weight", 0) + conv2d("conv1.conv_base.weight", 0)
    for i in range(1, 6):
        macs += conv2d(f"pack{i}.conv.conv_base.weight", i) + d * 27 * 4 * n[i - 1] * area(i)
        macs += conv2d(f"unpack{i}.conv.conv_base.weight", i)
        macs += d * 27 * shapes[f"unpack{i}.conv.conv_base.weight"][0] * area(i)
        macs += conv2d(f"iconv{i}.conv_base.weight", i - 1)
        if i < 5:
            macs += conv2d(f"disp{i}_layer.conv1.weight", i - 1)
    for key in shapes:  # residual blocks run at the resolution after packN-1
        if key.startswith(("conv2.", "conv3.", "conv4.", "conv5.")) and len(shapes[key]) == 4:
            macs += conv2d(key, int(key[4]) - 1)
    return macs


def test_macs(net_1a, net_slim):
    c = count_flops_and_params(net_1a, H, W)
    assert c["params"] == count_params(net_1a) and c["flops"] == 2 * c["macs"]
    assert c["macs"] == _expected_macs("1A", H, W)
    assert count_flops_and_params(net_slim, 64, 128)["macs"] == _expected_macs("slim", 64, 128)
    big = count_flops_and_params(net_1a, 192, 640)  # no compute: a fake-tensor twin
    assert big["macs"] == _expected_macs("1A", 192, 640)
    assert f"{big['macs'] / 1e9:.2f}" == "205.16"
    assert "128.29M parameters" in summary(net_1a)


def test_macs_posenet():
    net, (h, w) = PoseNet(), (64, 96)
    expected, cin = 0, 9
    for c, k in zip((16, 32, 64, 128, 256, 256, 256), (7, 5, 3, 3, 3, 3, 3)):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # stride 2, 'same' padding
        expected += c * cin * k * k * h * w
        cin = c
    expected += 12 * 256 * h * w
    assert count_flops_and_params(net, 64, 96)["macs"] == expected
    del net.config  # no constructor arguments: measured by a real forward pass
    assert count_flops_and_params(net, 64, 96)["macs"] == expected


# -------------------------------------------------------------- forward
def _skip_unless_auto_is_fused(x):
    """Comparing the default backend with the reference means something only
    when the default is a fused backend: without packops._C, auto runs the
    reference on CPU tensors and would be compared with itself."""
    if packops.backend_for("pack_conv", x) == "reference":
        pytest.skip(f"the default backend is the reference here ("
                    f"{packops.backends()['cpu'].reason}): nothing to compare it with")


def _check_outputs(outs, b=1):
    assert isinstance(outs, list) and len(outs) == 4
    for i, o in enumerate(outs):
        assert o.shape == (b, 1, H >> i, W >> i), (i, o.shape)
        assert o.dtype == torch.float32 and torch.isfinite(o).all()
        assert (o > 0).all() and (o <= 2).all()  # sigmoid / min_depth 0.5


@pytest.mark.parametrize("name", ["1A", "1B"])
def test_forward_train_eval_and_backends(name, net_1a, net_1b):
    net, x = (net_1a if name == "1A" else net_1b), _image(seed=3)
    net.train()
    with torch.no_grad():
        outs = net(x)
        with packops.use_backend("reference"):
            ref = net(x)
            net.eval()
            full = net(x)
    net.train()
    _check_outputs(outs)
    _check_outputs(ref)
    # No batch statistics or dropout: eval returns train mode's full-resolution map.
    assert isinstance(full, torch.Tensor) and full.shape == (1, 1, H, W)
    assert torch.equal(full, ref[0])
    _skip_unless_auto_is_fused(x)
    for i, (o, r) in enumerate(zip(outs, ref)):
        assert_close(o, r, 1e-4, f"{name} scale {i}: default backend vs reference")


def test_slim_forward(net_slim):
    net_slim.train()
    x = _image(b=2, seed=4)
    with torch.no_grad():
        outs = net_slim(x)
        with packops.use_backend("reference"):
            ref = net_slim(x)
    _check_outputs(outs, b=2)
    _skip_unless_auto_is_fused(x)
    for o, r in zip(outs, ref):
        assert_close(o, r, 1e-4, "slim: default backend vs reference")


def test_gradients_reach_every_parameter_and_match_reference(net_1a):
    net, x = net_1a.train(), _image(seed=5)
    grads = {}
    for backend in ("auto", "reference"):
        net.zero_grad(set_to_none=True)
        with packops.use_backend(backend):
            outs = net(x)
        sum(o.mean() * (i + 1) for i, o in enumerate(outs)).backward()
        grads[backend] = {k: p.grad for k, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    for backend, g in grads.items():
        missing = [k for k, v in g.items() if v is None]
        assert not missing, f"{backend}: no gradient for {missing[:5]}"
        dead = [k for k, v in g.items() if not torch.isfinite(v).all() or v.abs().sum() == 0]
        assert not dead, f"{backend}: zero or non-finite gradients for {dead[:5]}"
    _skip_unless_auto_is_fused(x)
    for k, r in grads["reference"].items():
        rel = float((grads["auto"][k] - r).norm() / r.norm())
        assert rel < 1e-3, f"{k}: default vs reference gradient, relative error {rel:.2e}"


def _release_forward(sd, x, stacking):
    """The release's depth forward written with plain functional ops over a
    state_dict: its packing permutation, layer order and skip order, so a
    checkpoint means the same thing here as there. Train-mode outputs."""
    def block(p, x):  # Conv2D: zero pad k//2, conv, GroupNorm(16), ELU
        w = sd[f"{p}.conv_base.weight"]
        x = F.conv2d(F.pad(x, [w.shape[-1] // 2] * 4), w, sd[f"{p}.conv_base.bias"])
        return F.elu(F.group_norm(x, 16, sd[f"{p}.normalize.weight"], sd[f"{p}.normalize.bias"]))

    def conv3d(p, x):  # [B,C,H,W] -> Conv3d(1 -> d) over the channel axis -> [B,d*C,H,W]
        b, c, h, w = x.shape
        v = F.conv3d(x.unsqueeze(1), sd[f"{p}.conv3d.weight"], sd[f"{p}.conv3d.bias"], padding=1)
        return v.reshape(b, -1, h, w)

    def pack(p, x):
        b, c, h, w = x.shape
        u = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return block(f"{p}.conv", conv3d(p, u.reshape(b, 4 * c, h // 2, w // 2)))

    def unpack(p, x):
        return F.pixel_shuffle(conv3d(p, block(f"{p}.conv", x)), 2)

    def residual(p, x):
        for i in range(len({k.split(".")[1] for k in sd if k.startswith(p + ".")})):
            q = f"{p}.{i}"
            out = block(f"{q}.conv2", block(f"{q}.conv1", x))
            out = out + F.conv2d(x, sd[f"{q}.conv3.weight"], sd[f"{q}.conv3.bias"])
            x = F.elu(F.group_norm(out, 16, sd[f"{q}.normalize.weight"],
                                   sd[f"{q}.normalize.bias"]))
        return x

    def inv_depth(i, x):
        p = f"disp{i}_layer.conv1"
        return torch.sigmoid(F.conv2d(F.pad(x, [1] * 4), sd[f"{p}.weight"], sd[f"{p}.bias"])) / 0.5

    def join(u, skip, *extra):
        return torch.cat((u, skip) + extra if stacking == "A" else (u + skip,) + extra, 1)

    def up(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    x0 = block("pre_calc", x)
    x1p = pack("pack1", block("conv1", x0))
    x2p = pack("pack2", residual("conv2", x1p))
    x3p = pack("pack3", residual("conv3", x2p))
    x4p = pack("pack4", residual("conv4", x3p))
    x5p = pack("pack5", residual("conv5", x4p))
    i5 = block("iconv5", join(unpack("unpack5", x5p), x4p))
    i4 = block("iconv4", join(unpack("unpack4", i5), x3p))
    d4 = inv_depth(4, i4)
    i3 = block("iconv3", join(unpack("unpack3", i4), x2p, up(d4)))
    d3 = inv_depth(3, i3)
    i2 = block("iconv2", join(unpack("unpack2", i3), x1p, up(d3)))
    d2 = inv_depth(2, i2)
    i1 = block("iconv1", join(unpack("unpack1", i2), x0, up(d2)))
    return [inv_depth(1, i1), d2, d3, d4]


@pytest.mark.parametrize("name", ["1B", "slim"])
def test_matches_release_forward(name, net_1b, net_slim):
    net = (net_1b if name == "1B" else net_slim).train()
    x = _image(seed=15)
    with torch.no_grad():
        expected = _release_forward(net.state_dict(), x, "B" if name == "1B" else "A")
        with packops.use_backend("reference"):
            ref = net(x)
        outs = net(x)
    for i, (e, r, o) in enumerate(zip(expected, ref, outs)):
        assert_close(r, e, 1e-5, f"{name} scale {i}: reference backend vs release forward")
        assert_close(o, e, 1e-4, f"{name} scale {i}: default backend vs release forward")


# ---------------------------------------------------------------- PoseNet
def test_posenet_output_and_rigid_transform():
    torch.manual_seed(6)
    net = PoseNet(2)
    img, ctx = _image(b=2, h=64, w=96, seed=7), [_image(b=2, h=64, w=96, seed=s) for s in (8, 9)]
    pose = net(img, ctx)
    assert pose.shape == (2, 2, 6)
    assert pose.abs().max() < 0.05  # 0.01 * the mean of a zero-bias 1x1 conv at init
    T = geometry.pose_vec2mat(pose.reshape(-1, 6))
    assert T.shape == (4, 4, 4)
    R = T[:, :3, :3]
    assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(4, 3, 3), 1e-5, "R R^T")
    assert_close(torch.linalg.det(R), torch.ones(4), 1e-5, "det R")
    assert torch.equal(T[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(4, 4))
    assert_close(T[:, :3, 3], pose.reshape(-1, 6)[:, :3], 0, "translation first")
    pose.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_posenet_state_dict_round_trip_and_strip_prefix(net_slim):
    torch.manual_seed(10)
    pose_a, pose_b = PoseNet(), PoseNet()
    img, ctx = _image(h=32, w=64, seed=11), [_image(h=32, w=64, seed=12), _image(h=32, w=64)]
    assert not torch.equal(pose_a(img, ctx), pose_b(img, ctx))
    # A release-style checkpoint: both networks under their prefixes.
    ckpt = {**{f"depth_net.{k}": v for k, v in net_slim.state_dict().items()},
            **{f"pose_net.{k}": v for k, v in pose_a.state_dict().items()}}
    pose_b.load_state_dict(strip_prefix(ckpt, "pose_net."))
    assert torch.equal(pose_a(img, ctx), pose_b(img, ctx))
    depth = strip_prefix(ckpt, "depth_net.")
    one_liner = {k.split("depth_net.", 1)[1]: v for k, v in ckpt.items()
                 if k.startswith("depth_net.")}
    assert list(depth) == list(one_liner) == list(net_slim.state_dict())
    lightning = strip_prefix({f"model.{k}": v for k, v in ckpt.items()}, "model.pose_net.")
    assert list(lightning) == list(pose_a.state_dict())
    with pytest.raises(ValueError, match="prefix"):
        strip_prefix(ckpt, "")


def test_depth_state_dict_round_trip(net_slim):
    torch.manual_seed(13)
    other = PackNetSlim01().eval()
    x = _image(seed=14)
    net_slim.eval()
    with torch.no_grad(), packops.use_backend("reference"):
        assert not torch.equal(other(x), net_slim(x))
        other.load_state_dict(net_slim.state_dict())  # strict: same keys and shapes
        assert torch.equal(other(x), net_slim(x))
    net_slim.train()
    with pytest.raises(RuntimeError):  # the widths differ: not interchangeable
        PackNet01("1B").load_state_dict(net_slim.state_dict())


# ------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("x, match", [
    (torch.rand(3, 64, 64), r"rgb must be \[B,3,H,W\] \(rank 4\)"),
    (torch.rand(1, 1, 64, 64), "rgb must have 3 channels"),
    (torch.rand(1, 3, 64, 48), "rgb: H and W must be divisible by 32"),
    (torch.rand(1, 3, 16, 64), "rgb: H and W must be divisible by 32"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "rgb must be a floating-point tensor"),
    ([[0.0]], r"rgb must be a torch.Tensor \[B,3,H,W\], got list"),
])
def test_packnet_bad_input(net_slim, x, match):
    with pytest.raises(ValueError, match="PackNetSlim01: " + match):
        net_slim(x)


def test_posenet_bad_input():
    net, img = PoseNet(2), torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="PoseNet: image must have 3 channels"):
        net(torch.rand(1, 4, 32, 32), [img, img])
    with pytest.raises(ValueError, match="nb_ref_imgs=2 tensors .* got 1 tensors"):
        net(img, [img])
    with pytest.raises(ValueError, match="got Tensor"):
        net(img, img)
    with pytest.raises(ValueError, match=r"context\[1\] must be \[B,3,H,W\]"):
        net(img, [img, img[0]])
    with pytest.raises(ValueError, match=r"context\[0\] must have the image's shape"):
        net(img, [torch.rand(1, 3, 32, 64), img])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown version '1C'"):
        PackNet01("1C")
    with pytest.raises(ValueError, match="version '1B' is not supported"):
        PackNetSlim01("1B")
    with pytest.raises(ValueError, match="nb_ref_imgs"):
        PoseNet(0)


def test_posenet_translation_and_rotation_scales():
    """The output scales multiply the raw (tx, ty, tz) and (rx, ry, rz) and
    change no parameter: the same weights give proportional outputs."""
    torch.manual_seed(15)
    base = PoseNet(2)
    scaled = PoseNet(2, translation_scale=0.1, rotation_scale=0.02)
    scaled.load_state_dict(base.state_dict())
    img, ctx = _image(h=32, w=64, seed=16), [_image(h=32, w=64, seed=s) for s in (17, 18)]
    a, b = base(img, ctx), scaled(img, ctx)
    assert_close(b[..., :3], 10 * a[..., :3], 1e-6, "translation scale 0.1 vs 0.01")
    assert_close(b[..., 3:], 2 * a[..., 3:], 1e-6, "rotation scale 0.02 vs 0.01")
    assert list(scaled.state_dict()) == list(base.state_dict())
    for bad in (0, -0.1, float("inf"), "0.1"):
        with pytest.raises(ValueError, match="translation_scale must be a positive number"):
            PoseNet(2, translation_scale=bad)
    with pytest.raises(ValueError, match="rotation_scale must be a positive number"):
        PoseNet(2, rotation_scale=float("nan"))


@pytest.mark.parametrize("init_depth", [None, 10.0, 40.0])
def test_init_depth_sets_the_initial_depth_and_keeps_the_layout(init_depth):
    torch.manual_seed(19)
    net = PackNetTiny(init_depth=init_depth).eval()
    assert list(net.state_dict()) == list(PackNetTiny().state_dict())
    with torch.no_grad(), packops.use_backend("reference"):
        depth = 1.0 / net(_image(h=64, w=96, seed=20))
    median = float(depth.median())
    if init_depth is None:  # the release's zero bias: sigmoid(~0) / 0.5 ~ 1
        assert 0.5 < median < 2.0, median
    else:  # the weights are the release's init, so the outputs spread around the prior
        assert init_depth / 2 < median < init_depth * 2, (init_depth, median)
    for bad in (0.5, 0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="init_depth must be a finite depth > min_depth"):
            PackNetTiny(init_depth=bad)
