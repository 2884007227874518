"""GAN techniques from the literature for better faces from the same compute: opt-in
changes to the training, each off by default (--diffaug, --loss hinge, --spectral-norm,
--lr-d and --lr-g)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


DIFFAUG_POLICIES = ("color", "translation", "cutout")


class DiffAugment:
    """--diffaug (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN
    Training"): random colour, translation and cutout, drawn afresh for every image that D
    sees, real and fake, in D's step and in G's. Every operation is differentiable, so G
    learns through it; D never sees an unaugmented image, so it cannot learn the
    augmentations as a mark of fakes. Draws from the device's global random stream (a
    checkpoint saves it), and draws nothing when the policy is empty."""

    def __init__(self, policy):
        self.policy = [name for name in policy.split(",") if name and name != "none"]

    def __call__(self, x):
        for name in self.policy:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def color(x):
        """Brightness +-0.5, saturation x0..2, contrast x0.5..1.5 (images in [-1, 1])."""
        n = x.size(0)
        x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean

    @staticmethod
    def translation(x, ratio=0.125):
        """Shifts each image by up to 1/8 of its side in each direction; zeros come in."""
        n, _, h, w = x.shape
        dy, dx = (torch.randint(-round(side * ratio), round(side * ratio) + 1, (n, 1, 1),
                                device=x.device) for side in (h, w))
        # index into the image padded with one row and column of zeros on each side: a
        # source outside the image lands on the padding
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp_(0, h + 1)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp_(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # N, H+2, W+2, C
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded[batch, rows, cols].permute(0, 3, 1, 2)

    @staticmethod
    def cutout(x, ratio=0.5):
        """Zeroes one square of half the side at a random place in each image."""
        n, _, h, w = x.shape
        size_h, size_w = round(h * ratio), round(w * ratio)
        top = torch.randint(0, h + 1 - size_h % 2, (n, 1, 1), device=x.device) - size_h // 2
        left = torch.randint(0, w + 1 - size_w % 2, (n, 1, 1), device=x.device) - size_w // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= top) & (rows < top + size_h)) & ((cols >= left) & (cols < left + size_w))
        return x * (~inside).unsqueeze(1).to(x.dtype)


class HingeLoss(nn.Module):
    """--loss hinge (Lim and Ye, 2017; SNGAN, BigGAN) on D's logits. D's criterion is
    called as the tutorial calls BCELoss, with the batch's label: mean relu(1 - D(x)) for
    real (label 1), mean relu(1 + D(G(z))) for fake (label 0). G's loss is -mean D(G(z))."""

    def forward(self, output, label):
        return F.relu(1 - (2 * label - 1) * output).mean()

    @staticmethod
    def generator_loss(output):
        return -output.mean()


def d_returns_logits(args):
    """D drops its Sigmoid for the hinge loss, and for --amp (BCEWithLogitsLoss)."""
    return args.loss == "hinge" or args.amp


def spectral_norm(netD):
    """--spectral-norm (Miyato et al., 2018): each of D's convolutions divided by its
    largest singular value, estimated by one power iteration a step. D's BatchNorm layers
    become identities, as in SNGAN's D: they rescale each feature by the batch's spread,
    which would undo the bound. Shapes change, so a run cannot switch it on resume."""
    for index, layer in enumerate(netD.main):
        if isinstance(layer, nn.Conv2d):
            nn.utils.parametrizations.spectral_norm(layer)
        elif isinstance(layer, nn.BatchNorm2d):
            netD.main[index] = nn.Identity()


def learning_rates(args):
    """(D's, G's) Adam learning rate: --lr-d and --lr-g (TTUR, Heusel et al., 2017), each
    --lr when not given."""
    return (args.lr if args.lr_d is None else args.lr_d,
            args.lr if args.lr_g is None else args.lr_g)
