"""Run by tests/test_distributed.py under torchrun; writes what each rank holds.

    ddp_probe.py train OUT ARGV...   dcgan.main(ARGV); then OUT/rank{R}.pt = the rank's G and D
    ddp_probe.py d_update OUT FLAGS  one D update of tiny models, each rank on its half of a
                                     fixed batch of 8; rank 0 writes OUT/d_update.pt
    ddp_probe.py signal K ARGV...    dcgan.main(ARGV), rank 1 sending itself SIGTERM
                                     during iteration K (0-based)
"""
import signal
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.optim as optim

import dcgan
from dcgan_beyond import cli, devices
from conftest import tiny_models


def fixed_batch():
    real = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(8, 8, 1, 1, generator=torch.Generator().manual_seed(2))
    return real, noise


def main():
    mode, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    if mode == "train":
        nets = []
        step = dcgan.train_step

        def recording_step(netG, netD, *args, **kwargs):
            if not nets:
                nets.extend([netG.module, netD.module])
            return step(netG, netD, *args, **kwargs)
        dcgan.train_step = recording_step
        status = dcgan.main(sys.argv[3:])
        if nets:
            torch.save({"G": nets[0].state_dict(), "D": nets[1].state_dict()},
                       os.path.join(out, f"rank{rank}.pt"))
        sys.exit(status)
    if mode == "signal":
        step, calls = dcgan.train_step, []

        def signalling_step(*args, **kwargs):
            calls.append(1)
            if rank == 1 and len(calls) == int(out) + 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(*args, **kwargs)
        dcgan.train_step = signalling_step
        sys.exit(dcgan.main(sys.argv[3:]))
    if mode == "d_update":
        args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(sys.argv[3:])
        proc = devices.setup_distributed(args)
        args = cli.resolve_settings(args, proc)
        rank, device = proc.rank, proc.device
        netG, netD = tiny_models()
        netG, netD = netG.to(device), netD.to(device)
        trainD = devices.prepare_for_training(netD, args, proc)
        optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
        real, noise = (t.to(device) for t in fixed_batch())
        half = slice(rank * 4, rank * 4 + 4)
        dcgan.d_step(netG, trainD, optimizerD, nn.BCELoss(), real[half], noise[half])
        if rank == 0:
            torch.save({k: v.cpu() for k, v in netD.state_dict().items()},
                       os.path.join(out, "d_update.pt"))
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
