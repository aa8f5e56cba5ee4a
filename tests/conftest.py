"""Shared test inputs: feature maps and boxes that cover the cases RoI ops get wrong.

Set MRCNN_TEST_MKLDNN=0 to run the suite with oneDNN (mkldnn) convolutions switched off, and
MRCNN_JITTER_SEEDS=1,2,... to run every test that takes the `jitter` fixture once per seed on inputs moved
by a few ulps: two of the perturbations in tests/perturbations.sh that change rounding but not meaning.
"""
import itertools
import os

import pytest
import torch


def pytest_configure(config):
    if os.environ.get("MRCNN_TEST_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
    config.addinivalue_line("markers", "rounding: a float32 result compared with the float64 truth, which another "
                                       "CPU rounds differently (tests/perturbations.sh runs these again)")


def pytest_collection_modifyitems(items):
    """The tests that take `jitter` in float32 are the ones whose results another CPU rounds differently: mark
    them `rounding`. float64 and exact comparisons cannot react to instruction sets or to a few ulps."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "jitter" in getattr(item, "fixturenames", ()) and params.get("dtype") != torch.float64:
            item.add_marker("rounding")


def pytest_report_header(config):
    return (f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, mkldnn {'on' if torch.backends.mkldnn.enabled else 'off'}")


def random_boxes(gen: torch.Generator, count: int, height: float, width: float, dtype=torch.float64):
    """Tensor[count, 4] of boxes inside an image of height × width, sizes from sub-pixel to most of it."""
    centre = torch.rand(count, 2, generator=gen, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    size = torch.rand(count, 2, generator=gen, dtype=dtype) ** 2 * torch.tensor([width, height], dtype=dtype)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def awkward_boxes(height: float, width: float, dtype=torch.float64):
    """Hand-picked boxes for an image of height × width: each row names a known pitfall."""
    h, w = height, width
    return torch.tensor(
        [
            [0.0, 0.0, w, h],  # the whole image
            [-0.3 * w, -0.2 * h, 0.4 * w, 0.5 * h],  # partly outside, top left
            [0.6 * w, 0.7 * h, 1.3 * w, 1.5 * h],  # partly outside, bottom right
            [1.2 * w, 1.1 * h, 1.5 * w, 1.4 * h],  # wholly outside, bottom right
            [-0.9 * w, -0.8 * h, -0.5 * w, -0.4 * h],  # wholly outside, top left
            [0.3 * w, 0.3 * h, 0.3 * w, 0.3 * h],  # zero size
            [0.25 * w, 0.5 * h, 0.25 * w, 0.75 * h],  # zero width
            [0.41 * w, 0.52 * h, 0.41 * w + 0.3, 0.52 * h + 0.2],  # sub-pixel
            [0.1 * w, 0.2 * h, 0.9 * w, 0.3 * h],  # long and thin
            [w - 1.0, h - 1.0, w, h],  # last pixel
        ],
        dtype=dtype,
    )


def make_rois(seed: int, n_images: int, image_size: tuple[float, float], per_image: int, dtype=torch.float64):
    """Tensor[K, 5] of (batch index, x1, y1, x2, y2): random boxes plus the awkward ones, for every image."""
    gen = torch.Generator().manual_seed(seed)
    height, width = image_size
    rois = []
    for b in range(n_images):
        boxes = torch.cat([random_boxes(gen, per_image, height, width, dtype), awkward_boxes(height, width, dtype)])
        rois.append(torch.cat([torch.full((len(boxes), 1), float(b), dtype=dtype), boxes], dim=1))
    return torch.cat(rois)


# A model small enough to train a few steps in a second, for the tests of the engine and the command line.
TINY = {"min_size": (64,), "max_size": 64, "width": 8, "fpn_channels": 16, "box_representation_size": 32,
        "mask_channels": 16}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny shapes dataset (8 train, 4 val images of 64 pixels) for the engine and command-line tests."""
    from mrcnn_from_scratch.data import generate_shapes_dataset

    out = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(out, train=8, val=4, size=64, seed=0, progress=False)
    return out


# Seeds of the rounding jitter; by default one run without it.
JITTER_SEEDS = [int(seed) for seed in os.environ.get("MRCNN_JITTER_SEEDS", "").split(",") if seed.strip()] or [None]


def pytest_generate_tests(metafunc):
    if "jitter" in metafunc.fixturenames:
        metafunc.parametrize("jitter", JITTER_SEEDS, indirect=True,
                             ids=[f"jitter{seed}" if seed is not None else "exact" for seed in JITTER_SEEDS])


@pytest.fixture
def jitter(request):
    """A function that moves a float tensor by a few float32 ulps at random: x · (1 + u · eps), u uniform in
    [-4, 4], seeded by the test's jitter seed and the call's number (the identity without a seed).

    Every CPU rounds differently, and no list of CPU flags to imitate covers the next one. Moving the
    inputs by a few ulps changes the last bits of every value downstream, through every code path, as
    another CPU might: near-ties between scores then fall anywhere, and a comparison that holds only for
    one machine's roundings fails. Apply it to the float32 inputs before making the float64 truth from them.
    """
    seed = request.param
    if seed is None:
        return lambda tensor: tensor
    calls = itertools.count()

    def move(tensor: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + next(calls))
        u = torch.rand(tensor.shape, generator=gen, dtype=torch.float64) * 8 - 4
        return (tensor.double() * (1 + u * FLOAT32_EPS)).to(tensor.dtype)

    return move


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


# float32's machine epsilon (2^-23): the spacing of floats just above 1.
FLOAT32_EPS = torch.finfo(torch.float32).eps


def assert_as_accurate_as(ours: torch.Tensor, theirs: torch.Tensor, truth: torch.Tensor, name: str = "",
                          factor: float = 4.0) -> None:
    """Check a float32 result of ours against torchvision's float32 result and the float64 truth.

    Two implementations that add the same terms in another order differ in their last bits, and by how
    much depends on the CPU: its vector width, whether it fuses multiply-adds, which kernel the BLAS
    library picks for it. So the two float32 results are not compared with each other. Each is compared
    with the float64 result (float64 rounds 2^29 times more finely, so it is the truth to float32's
    precision), and ours may be off by at most `factor` times torchvision's own float32 error on this
    machine, plus 4 ulps of the largest value (for results torchvision happens to get exactly).

    Why a factor of 4: both sides do the same operations, so both errors obey the same bound
    (terms summed × eps × their magnitudes); the order only changes which roundings happen, which moves
    the largest error over thousands of outputs by a small factor. A real bug (a pixel off, a wrong bin,
    a wrong pyramid level) moves outputs by a sizeable part of their scale: thousands of times more.
    """
    if ours.shape != theirs.shape or ours.shape != truth.shape:
        raise AssertionError(f"{name}: shapes {tuple(ours.shape)}, {tuple(theirs.shape)}, {tuple(truth.shape)}")
    if truth.numel() == 0:
        return
    truth = truth.double()
    our_error = (ours.double() - truth).abs().max().item()
    their_error = (theirs.double() - truth).abs().max().item()
    bound = factor * their_error + 4 * FLOAT32_EPS * truth.abs().max().item()
    assert our_error <= bound, (f"{name}: ours is {our_error:.3g} from the float64 truth, torchvision "
                                f"{their_error:.3g}: more than the bound {bound:.3g}")
