"""The PyTorch DCGAN faces tutorial's own code, as the specification dcgan.py is held to.

Kept as the tutorial writes it (models, weights_init, order of set-up, loop body, with
float labels as current PyTorch needs), only wrapped in functions so that tests can run
it on tiny models, and so that bench.py can time its loop as the baseline. Run it to see
the tutorial's statistics lines for a folder, and compare them with dcgan.py's:

    python tests/tutorial_reference.py data/celeba 51
"""
import random
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data
import torchvision.datasets as dset
import torchvision.transforms as transforms


def tutorial_models(nz, ngf, ndf, nc=3):
    """The tutorial's Generator and Discriminator classes (64x64) and weights_init."""

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)

    class Generator(nn.Module):
        def __init__(self, ngpu):
            super(Generator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh()
            )

        def forward(self, input):
            return self.main(input)

    class Discriminator(nn.Module):
        def __init__(self, ngpu):
            super(Discriminator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                nn.Sigmoid()
            )

        def forward(self, input):
            return self.main(input)

    return Generator, Discriminator, weights_init


def tutorial_dataloader(dataroot, image_size, batch_size, workers):
    dataset = dset.ImageFolder(root=dataroot,
                               transform=transforms.Compose([
                                   transforms.Resize(image_size),
                                   transforms.CenterCrop(image_size),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                               ]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=workers)


def tutorial_step(netG, netD, optimizerG, optimizerD, criterion, data, nz, device,
                  real_label=1., fake_label=0.):
    """The body of the tutorial's training loop, with its five .item() synchronisations."""
    ############################
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    ###########################
    ## Train with all-real batch
    netD.zero_grad()
    # Format batch
    real_cpu = data[0].to(device)
    b_size = real_cpu.size(0)
    label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
    # Forward pass real batch through D
    output = netD(real_cpu).view(-1)
    # Calculate loss on all-real batch
    errD_real = criterion(output, label)
    # Calculate gradients for D in backward pass
    errD_real.backward()
    D_x = output.mean().item()

    ## Train with all-fake batch
    # Generate batch of latent vectors
    noise = torch.randn(b_size, nz, 1, 1, device=device)
    # Generate fake image batch with G
    fake = netG(noise)
    label.fill_(fake_label)
    # Classify all fake batch with D
    output = netD(fake.detach()).view(-1)
    # Calculate D's loss on the all-fake batch
    errD_fake = criterion(output, label)
    # Calculate the gradients for this batch
    errD_fake.backward()
    D_G_z1 = output.mean().item()
    # Add the gradients from the all-real and all-fake batches
    errD = errD_real + errD_fake
    # Update D
    optimizerD.step()

    ############################
    # (2) Update G network: maximize log(D(G(z)))
    ###########################
    netG.zero_grad()
    label.fill_(real_label)  # fake labels are real for generator cost
    # Since we just updated D, perform another forward pass of all-fake batch through D
    output = netD(fake).view(-1)
    # Calculate G's loss based on this output
    errG = criterion(output, label)
    # Calculate gradients for G
    errG.backward()
    D_G_z2 = output.mean().item()
    # Update G
    optimizerG.step()
    return errD.item(), errG.item(), D_x, D_G_z1, D_G_z2


def run_tutorial(dataroot, num_iters, workers=0, batch_size=128, nz=100, ngf=64, ndf=64,
                 lr=0.0002, beta1=0.5, seed=999, num_epochs=5, device="cpu"):
    """The tutorial's program (on the CPU unless told), from its seed to num_iters
    iterations of its loop; returns the per-iteration (Loss_D, Loss_G, D(x), D(G(z))
    before / after) and the final networks."""
    random.seed(seed)
    torch.manual_seed(seed)
    dataloader = tutorial_dataloader(dataroot, 64, batch_size, workers)
    device = torch.device(device)
    real_batch = next(iter(dataloader))  # the tutorial draws a batch to plot it
    Generator, Discriminator, weights_init = tutorial_models(nz, ngf, ndf)
    netG = Generator(1).to(device)
    netG.apply(weights_init)
    netD = Discriminator(1).to(device)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(64, nz, 1, 1, device=device)
    optimizerD = optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
    stats = []
    for epoch in range(num_epochs):
        for i, data in enumerate(dataloader, 0):
            stats.append(tutorial_step(netG, netD, optimizerG, optimizerD, criterion, data,
                                       nz, device))
            if len(stats) == num_iters:
                return stats, netG, netD, real_batch, fixed_noise
    return stats, netG, netD, real_batch, fixed_noise


if __name__ == "__main__":
    dataroot, num_iters = sys.argv[1], int(sys.argv[2])
    stats = run_tutorial(dataroot, num_iters)[0]
    batches = len(tutorial_dataloader(dataroot, 64, 128, 0))
    for iters, values in enumerate(stats):
        epoch, i = divmod(iters, batches)
        if i % 50 == 0:
            print('[%d/%d][%d/%d]\tLoss_D: %.4f\tLoss_G: %.4f\tD(x): %.4f\tD(G(z)): %.4f / %.4f'
                  % (epoch, 5, i, batches, *values))
