"""The renderer against App. C.3, coordinate by coordinate."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projectable_data import TEXTURE_TYPES, load_mnist, render_synthmnist, render_texture, texture_type
from projectable_data.synthmnist import sc


def base_task(kind=0, **coords):
    """A task with no rotation, no warp, no channel shift, colour 1 and texture `kind`; then `coords`."""
    t = np.zeros(18, dtype=np.float32)
    t[1] = 0.25  # sc = 6.5
    t[2] = t[3] = 0.5
    t[10 + kind] = 1.0
    t[13], t[14] = 0.5, 0.25
    t[15:18] = 1.0 / 3.0  # colour 0.5 + 1.5 / 3 = 1
    for key, value in coords.items():
        t[int(key[1:])] = value
    return t


def tex(*tasks):
    return render_texture(np.stack(tasks))


def unit_grid(size=32):
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return torch.meshgrid(centres, centres, indexing="ij")  # y, x


@pytest.fixture(scope="module")
def digits(mnist_root):
    return load_mnist("test", mnist_root).images[:16]


def test_value_range_shape_and_determinism(digits):
    tasks = np.random.default_rng(0).random((16, 18), dtype=np.float32)
    flips = np.arange(16) % 2 == 0
    a = render_synthmnist(tasks, digits, flips)
    b = render_synthmnist(tasks.copy(), digits.copy(), flips.copy())
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1 and a.min() < -0.9 and a.max() == 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_image_does_not_depend_on_batch_neighbours(digits):
    tasks = np.random.default_rng(1).random((16, 18), dtype=np.float32)
    batch = render_synthmnist(tasks, digits)
    alone = torch.cat([render_synthmnist(tasks[i : i + 1], digits[i : i + 1]) for i in range(16)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-6)


def test_closed_form_stripes():
    """Type (a): cos(sc(t1) * (x - t2) + 2 pi t7) * colour, with x the pixel centre in [0, 1]."""
    t = base_task(0, t1=0.1, t2=0.2, t7=0.3, t8=0.0, t9=0.7, t15=0.0, t16=0.2, t17=1.0 / 3.0)
    y, x = unit_grid()
    image = tex(t)[0]
    for c in range(3):
        expected = torch.cos(float(sc(torch.tensor(t[1]))) * (x - t[2]) + 2 * math.pi * t[7 + c])
        expected = (expected * (0.5 + 1.5 * t[15 + c])).clamp(-1, 1)
        torch.testing.assert_close(image[c], expected, atol=1e-5, rtol=0)


def test_closed_form_rings_centred_at_t2_t3():
    """Type (b): cos(sc(t1) * |p - (t2, t3)|), rings around the rotation centre, any angle."""
    t = base_task(1, t0=0.37, t2=0.3, t3=0.8)
    y, x = unit_grid()
    expected = torch.cos(float(sc(torch.tensor(t[1]))) * torch.sqrt((x - 0.3) ** 2 + (y - 0.8) ** 2))
    for c in range(3):
        torch.testing.assert_close(tex(t)[0, c], expected, atol=1e-5, rtol=0)


def test_t0_rotates_the_texture():
    flat_rows = tex(base_task(0, t0=0.0))[0]  # stripes vary along x only
    flat_cols = tex(base_task(0, t0=0.25))[0]  # rotated by pi/2: vary along y only
    assert flat_rows.std(dim=1).max() < 1e-5 and flat_rows.std(dim=2).min() > 0.1
    assert flat_cols.std(dim=2).max() < 1e-5 and flat_cols.std(dim=1).min() > 0.1
    torch.testing.assert_close(tex(base_task(0, t0=1.0)), tex(base_task(0, t0=0.0)), atol=1e-4, rtol=0)


def test_t1_scales_spatial_frequency():
    def sign_changes(t1):
        row = tex(base_task(0, t1=t1))[0, 0, 0]
        return int((torch.sign(row[1:]) != torch.sign(row[:-1])).sum())

    counts = [sign_changes(t1) for t1 in (0.0, 0.5, 1.0, 1.5)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_t4_t5_warp_only_above_threshold_and_t6_sets_its_frequency():
    plain = tex(base_task(0))
    for coord in ("t4", "t5"):
        torch.testing.assert_close(
            tex(base_task(0, **{coord: 0.3})), plain, rtol=0, atol=0
        )  # relu(0.3 - 0.3) = 0
    warped_x = tex(base_task(0, t4=0.9))
    assert (warped_x - plain).abs().max() > 0.5
    # t0 = 0: stripes depend on x only, so a y-warp changes nothing and an x-warp keeps rows equal
    torch.testing.assert_close(tex(base_task(0, t5=0.9)), plain, rtol=0, atol=0)
    assert warped_x[0].std(dim=1).max() < 1e-5
    assert (tex(base_task(0, t4=0.9, t6=0.8)) - warped_x).abs().max() > 0.5
    torch.testing.assert_close(tex(base_task(0, t6=0.8)), plain, rtol=0, atol=0)  # no amplitude, no warp


def test_closed_form_warp_acts_on_scaled_coordinates():
    """x~ = x' + a cos(sc(t6) x') with x' = sc(t1) (x - t2) and a = relu(t4 - 0.3) / 0.7."""
    t = base_task(0, t4=0.65, t6=0.1)
    y, x = unit_grid()
    x_scaled = float(sc(torch.tensor(t[1]))) * (x - t[2])
    x_warped = x_scaled + 0.5 * torch.cos(float(sc(torch.tensor(t[6]))) * x_scaled)
    torch.testing.assert_close(tex(t)[0, 0], torch.cos(x_warped), atol=1e-5, rtol=0)


def test_t7_t8_t9_shift_one_channel_each():
    plain = tex(base_task(1))
    for channel in range(3):
        shifted = tex(base_task(1, **{f"t{7 + channel}": 0.25}))
        changed = [(shifted[0, c] - plain[0, c]).abs().max().item() > 0.1 for c in range(3)]
        assert changed == [c == channel for c in range(3)]
    torch.testing.assert_close(tex(base_task(1, t7=1.0)), plain, atol=1e-5, rtol=0)  # a full period


def test_t10_t11_t12_pick_each_texture_type():
    rng = np.random.default_rng(0)
    kinds = texture_type(torch.from_numpy(rng.random((3000, 18), dtype=np.float32)))
    counts = torch.bincount(kinds, minlength=3)
    assert len(TEXTURE_TYPES) == 3 and counts.min() > 900  # each about a third
    images = [tex(base_task(k, t13=1.0, t14=0.0))[0] for k in range(3)]
    assert all((images[i] - images[j]).abs().max() > 0.5 for i in range(3) for j in range(i))
    t = base_task(0)
    t[10:13] = [0.2, 0.9, 0.5]
    torch.testing.assert_close(tex(t), tex(base_task(1)), rtol=0, atol=0)  # argmax decides, not the values


def test_t13_t14_shape_the_third_texture_only():
    y, x = unit_grid()
    t = base_task(2, t13=0.7, t14=0.4)
    s = float(sc(torch.tensor(t[1])))
    g = torch.cos(s * (x - 0.5) / 3) * torch.cos(s * (y - 0.5) / 3)
    torch.testing.assert_close(tex(t)[0, 0], torch.cos(10 * g * 0.7 + 2 * 0.4), atol=1e-5, rtol=0)
    for coord in ("t13", "t14"):
        torch.testing.assert_close(tex(base_task(0, **{coord: 0.9})), tex(base_task(0)), rtol=0, atol=0)
        assert (tex(base_task(2, **{coord: 0.9})) - tex(base_task(2))).abs().max() > 0.1


def test_t15_t16_t17_scale_each_colour_channel():
    dim, bright = tex(base_task(1, t15=0.0, t16=0.0, t17=0.0))[0], tex(base_task(1))[0]  # colour 0.5 vs 1
    torch.testing.assert_close(2 * dim, bright, atol=1e-5, rtol=0)
    saturated = tex(base_task(1, t16=1.0))[0]  # colour 2 in G, then clipped
    torch.testing.assert_close(saturated[1], (2 * bright[1]).clamp(-1, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(saturated[0], bright[0], rtol=0, atol=0)


def test_digit_is_overlaid_white_and_flip_mirrors_it(digits):
    t = np.stack([base_task(0)] * 2)
    image = render_synthmnist(t, digits[:2])
    alpha = F.pad(torch.from_numpy(digits[:2].astype(np.float32) / 255), (2, 2, 2, 2))[:, None]  # centred
    torch.testing.assert_close(image, tex(*t) * (1 - alpha) + alpha, atol=1e-6, rtol=0)
    flipped = render_synthmnist(t, digits[:2], [True, False])
    mirrored = render_synthmnist(t, digits[:2, :, ::-1])
    torch.testing.assert_close(flipped[0], mirrored[0], rtol=0, atol=0)
    torch.testing.assert_close(flipped[1], image[1], rtol=0, atol=0)
    assert (flipped[0] - image[0]).abs().max() > 0.5


def test_lower_resolutions_are_area_downsampled(digits):
    tasks = np.random.default_rng(2).random((4, 18), dtype=np.float32)
    full = render_synthmnist(tasks, digits[:4])
    for resolution, factor in ((16, 2), (8, 4)):
        small = render_synthmnist(tasks, digits[:4], resolution=resolution)
        assert small.shape == (4, 3, resolution, resolution)
        torch.testing.assert_close(small, F.avg_pool2d(full, factor), rtol=0, atol=1e-6)
        torch.testing.assert_close(small[0, 0, 0, 0], full[0, 0, :factor, :factor].mean(), rtol=0, atol=1e-6)


def test_bad_inputs_are_value_errors(digits):
    with pytest.raises(ValueError, match=r"\(B, 18\)"):
        render_texture(np.zeros(18))
    with pytest.raises(ValueError, match="one digit per task"):
        render_synthmnist(np.zeros((2, 18)), digits[:3])
    with pytest.raises(ValueError, match="resolution"):
        render_synthmnist(np.zeros((1, 18)), digits[:1], resolution=24)
