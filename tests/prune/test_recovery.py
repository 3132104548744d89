"""Recovery after a structured cut: calibration never sees val, index records are right, recovery is exact
where it must be, and reconstruction brings the pruned outputs closer to the unpruned model's."""

from __future__ import annotations

import copy

import pytest
import torch

from orchestrator.errors import DataError
from orchestrator.prune import apply_ratios, conv_layers, uniform_ratios
from orchestrator.prune.activation_importance import OutputErrorImportance
from orchestrator.prune.calibration import calibration_files, calibration_set
from orchestrator.prune.recovery import _out_size, _patches, compensate, input_stats, parse_steps, reconstruct, recover
from orchestrator.yolo.data import load_data_config

IMGSZ = 128


@pytest.fixture(scope="module")
def data(coco128_yaml):
    return load_data_config(coco128_yaml)


@pytest.fixture(scope="module")
def calib(data):
    return calibration_set(data, IMGSZ, n=8)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)[0]


def test_calibration_reads_train_only(data, calib):
    files = calibration_files(data, n=1000)
    assert files and set(files) <= set(data.train) and not set(files) & set(data.val)
    assert len(calib) == 8 and set(calib.files) <= set(data.train)
    assert calib.images.shape == (8, 3, IMGSZ, IMGSZ) and calib.images.dtype == torch.uint8


def test_calibration_leaves_out_val_images_listed_under_train(data, tmp_path):
    both = tmp_path / "both.yaml"
    root = data.root
    both.write_text(f"path: {root}\ntrain: [images/train2017, images/val2017]\nval: images/val2017\nnames: {{0: a}}\n")
    mixed = load_data_config(both)
    assert set(mixed.val) <= set(mixed.train)
    files = calibration_files(mixed, n=10_000)
    assert sorted(files) == sorted(data.train)
    same = tmp_path / "same.yaml"
    same.write_text(f"path: {root}\ntrain: images/val2017\nval: images/val2017\nnames: {{0: a}}\n")
    with pytest.raises(DataError, match="no train image that is not also a val image"):
        calibration_files(load_data_config(same))


def test_kept_channels_line_up_with_the_unpruned_weights(yolov5n):
    m, kept = copy.deepcopy(yolov5n), {}
    apply_ratios(
        m, uniform_ratios(m, 0.3, "block", method="structured"), method="structured", granularity="block", kept=kept
    )
    before = conv_layers(yolov5n)
    for name, conv in conv_layers(m).items():
        k = kept[name]
        torch.testing.assert_close(conv.weight, before[name].weight[k.out][:, k.inp], rtol=0, atol=0)
    assert len(kept["model.9.cv2.conv"].inp) == m.model[9].cv2.conv.in_channels < 4 * 128


def test_recovery_without_a_cut_changes_nothing(yolov5n, calib):
    m, kept = copy.deepcopy(yolov5n), {}
    apply_ratios(m, {}, method="structured", granularity="block", kept=kept)
    report = recover(m, yolov5n, kept, calib, ("compensate", "reconstruct"))
    assert report.convs_changed == {"compensate": 0, "reconstruct": 0}
    x = calib.images[:2].float() / 255
    torch.testing.assert_close(_outputs(m, x), _outputs(yolov5n, x), rtol=0, atol=0)


def test_compensation_is_exact_for_a_constant_channel(yolov5n, calib):
    """model.3's channel 5 made constant (zero weights, zero BN scale): cutting it and folding its mean into
    model.4's 1x1 convs gives the same outputs as keeping it."""
    ref = copy.deepcopy(yolov5n)
    with torch.no_grad():
        ref.model[3].conv.weight[5] = 0
        ref.model[3].bn.weight[5] = 0
        ref.model[3].bn.bias[5] = 1.5
    m, kept = copy.deepcopy(ref), {}
    apply_ratios(m, {"model.3": 1 / 64}, method="structured", granularity="block", kept=kept)
    assert 5 not in kept["model.4.cv1.conv"].inp and len(kept["model.4.cv1.conv"].inp) == 63
    x = calib.images[:2].float() / 255
    assert not torch.allclose(_outputs(m, x), _outputs(ref, x), atol=1e-3)  # the cut alone changes outputs
    assert compensate(m, ref, kept, input_stats(ref, calib)) == 2  # model.4's cv1 and cv2 read model.3
    torch.testing.assert_close(_outputs(m, x), _outputs(ref, x), rtol=1e-4, atol=1e-3)


def test_reconstruction_moves_pruned_outputs_towards_the_unpruned(yolov5n, calib):
    m, kept = copy.deepcopy(yolov5n), {}
    apply_ratios(m, {"model.6": 0.3, "model.8": 0.3}, method="structured", granularity="block", kept=kept)
    x = calib.images[6:8].float() / 255  # not among the images the fit uses
    target = _outputs(yolov5n, x)
    err_cut = (_outputs(m, x) - target).pow(2).mean()
    assert reconstruct(m, yolov5n, kept, calib, images=6, positions=64) > 0
    assert (_outputs(m, x) - target).pow(2).mean() < 0.7 * err_cut


@pytest.mark.parametrize("images, fitted", [(None, 30), (4, 3)])
def test_reconstruction_fits_on_every_calibration_image_given(yolov5n, data, monkeypatch, images, fitted):
    """It once fitted on the first 32 whatever count was asked: 128 images lift the 0.7x map 0.166 -> 0.183."""
    import orchestrator.prune.recovery as rec

    calib = calibration_set(data, 64, n=40)  # more than 32; a quarter is held out

    rows, add = [], rec._Normal.add
    monkeypatch.setattr(rec._Normal, "add", lambda self, x, y: (rows.append((self, len(x))), add(self, x, y))[1])
    m, kept = copy.deepcopy(yolov5n), {}
    apply_ratios(m, {"model.2": 0.3}, method="structured", granularity="block", kept=kept)
    reconstruct(m, yolov5n, kept, calib, images=images, positions=16)
    first_fit = rows[0][0]  # the first conv refit (stride 4: 256 positions, 16 sampled per image)
    assert sum(n for k, n in rows if k is first_fit) == fitted * 16


@pytest.mark.parametrize(
    "k, s, p, d", [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (6, 2, 2, 1), (3, 1, 2, 2), (5, 1, 2, 1)]
)
def test_patches_at_sampled_positions_equal_unfold(k, s, p, d):
    """Reconstruction gathers only the output positions it fits on: the same rows a full F.unfold holds."""
    conv = torch.nn.Conv2d(5, 4, k, s, p, dilation=d)
    x = torch.randn(3, 5, 21, 19)
    h, w = _out_size(conv, x)
    assert (h, w) == conv(x).shape[-2:]
    cols = torch.nn.functional.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    pos = torch.randperm(h * w)[:17]
    want = cols[:, :, pos].transpose(1, 2).reshape(-1, cols.shape[1])
    assert torch.equal(_patches(conv, x, pos), want)


def test_parse_steps():
    assert parse_steps("recalibrate,compensate") == ("compensate", "recalibrate")
    assert parse_steps("none") == ()
    with pytest.raises(Exception, match="recovery steps must be among"):
        parse_steps("compensate,magic")


def test_output_error_importance_cuts_a_constant_channel_first(yolov5n, calib):
    """model.3's channel 9 outputs a constant (BN scale 0, weights intact): no output error to lose."""
    ref = copy.deepcopy(yolov5n)
    with torch.no_grad():
        ref.model[3].bn.weight[9] = 0
    stats = input_stats(ref, calib)
    m, kept = copy.deepcopy(ref), {}
    imp = OutputErrorImportance(m, stats, kept)
    report = apply_ratios(m, {"model.3": 1 / 64}, method="structured", granularity="block", importance=imp, kept=kept)
    assert kept["model.3.conv"].out == [c for c in range(64) if c != 9] and report.importance == "output_error"
