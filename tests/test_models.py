"""The models: the tutorial's at 64 px, the DCGAN pattern at other sizes, the init."""
import pytest
import torch
import torch.nn as nn

import dcgan
from dcgan_beyond import cli
from tutorial_reference import tutorial_models


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_default_models_have_the_tutorials_parameter_counts():
    assert count_parameters(dcgan.Generator()) == 3_576_704
    assert count_parameters(dcgan.Discriminator()) == 2_765_568


def test_64px_models_are_the_tutorials_layer_for_layer():
    Generator, Discriminator, _ = tutorial_models(nz=100, ngf=64, ndf=64)
    assert str(dcgan.Generator().main) == str(Generator(1).main)
    assert str(dcgan.Discriminator().main) == str(Discriminator(1).main)
    # same state dict keys, so tutorial checkpoints load into these models
    assert dcgan.Generator().state_dict().keys() == Generator(1).state_dict().keys()


def test_build_models_draws_the_tutorials_initial_weights():
    Generator, Discriminator, weights_init = tutorial_models(nz=8, ngf=4, ndf=4)
    torch.manual_seed(3)
    netG, netD = Generator(1), None
    netG.apply(weights_init)
    netD = Discriminator(1)
    netD.apply(weights_init)
    torch.manual_seed(3)
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--nz", "8", "--ngf", "4", "--ndf", "4"])
    ourG, ourD = dcgan.build_models(args, torch.device("cpu"))
    for ours, theirs in ((ourG, netG), (ourD, netD)):
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_every_power_of_two_size_makes_and_judges_images_of_that_size(size):
    netG = dcgan.Generator(nz=8, ngf=4, nc=3, image_size=size)
    netD = dcgan.Discriminator(nc=3, ndf=4, image_size=size)
    images = netG(torch.randn(2, 8, 1, 1))
    assert images.shape == (2, 3, size, size)
    assert netD(images).shape == (2, 1, 1, 1)
    # one stride-2 block per doubling, each doubling (G: halving) the feature maps
    blocks = [m for m in netG.main if isinstance(m, nn.ConvTranspose2d)]
    assert len(blocks) == size.bit_length() - 2
    assert [b.out_channels for b in blocks[:-1]] == [4 * size // 8 >> k for k in range(len(blocks) - 1)]


def test_grayscale_models_have_one_channel():
    netG = dcgan.Generator(nz=8, ngf=4, nc=1, image_size=32)
    assert netG(torch.randn(2, 8, 1, 1)).shape == (2, 1, 32, 32)
    assert dcgan.Discriminator(nc=1, ndf=4, image_size=32)(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 1, 1)


def test_weights_init_gives_the_documented_distributions():
    torch.manual_seed(0)
    netG, netD = dcgan.Generator(), dcgan.Discriminator()
    netG.apply(dcgan.weights_init)
    netD.apply(dcgan.weights_init)
    for model in (netG, netD):
        convs = torch.cat([m.weight.flatten() for m in model.modules()
                           if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        gammas = torch.cat([m.weight for m in norms]).detach()
        assert abs(convs.mean().item()) < 1e-3 and abs(convs.std().item() - 0.02) < 1e-3
        assert abs(gammas.mean().item() - 1) < 5e-3 and abs(gammas.std().item() - 0.02) < 5e-3
        assert all(torch.count_nonzero(m.bias) == 0 for m in norms)


def test_importing_dcgan_has_no_side_effects(tmp_path):
    import subprocess
    import sys
    code = ("import matplotlib, dcgan, sys; "
            "print(matplotlib.get_backend() if 'matplotlib.pyplot' in sys.modules else 'no pyplot')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": dcgan.__file__.rsplit("/", 1)[0]})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no pyplot"
    assert list(tmp_path.iterdir()) == []  # wrote nothing
