"""Devices and torchrun: this process's place in the job (`Process`), the device and what
it supports, the wrappers for speed and scale, and the memory a step needs."""
import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .errors import UserError


@dataclasses.dataclass(frozen=True)
class Process:
    """This process's place in the job: its rank among world_size processes, its device,
    and whether it writes (rank 0 alone prints, plots and writes files)."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def writes(self):
        return self.rank == 0

    def log(self, *values):
        """print() for rank 0, that keeps a progress bar below the lines."""
        if self.writes:
            tqdm.write(" ".join(str(v) for v in values))


def launcher_rank():
    """This process's rank as torchrun announces it (0 when not under torchrun), before the
    process group exists."""
    return int(os.environ.get("RANK", "0"))


def tell_launcher(line):
    """Under torchrun, hands rank 0's one-line error to the launcher through its error file
    (TORCHELASTIC_ERROR_FILE), so that torchrun's closing report, which it prints after
    about 40 lines of its own, names the problem as its root cause. Elsewhere: nothing."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with contextlib.suppress(OSError):
            with open(path, "w") as f:
                json.dump({"message": line, "timestamp": int(time.time())}, f)


def setup_distributed(args):
    """Joins the torchrun job if there is one, and tunes this process for its device
    (--deterministic's kernels; glibc's memory on the CPU); returns this Process.

    NCCL on CUDA, Gloo elsewhere. The timeout makes a rank that died or hangs end the
    whole job with an error instead of a silent wait; torchrun stops the other ranks.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        process = Process(device=pick_device(args.device, args.ngpu))
    else:
        rank, local_rank = launcher_rank(), int(os.environ["LOCAL_RANK"])
        if args.ngpu > 1:
            raise UserError("--ngpu > 1 (nn.DataParallel) cannot run under torchrun, which "
                            "already gives each GPU its own process; drop --ngpu")
        if args.batch_size % world_size:
            raise UserError(f"--batch-size {args.batch_size} cannot be split evenly over "
                            f"{world_size} processes; use a multiple of {world_size}")
        device = pick_device(args.device, args.ngpu, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
        process = Process(rank, world_size, device)
    if process.device.type == "cpu" and not keep_freed_memory():
        process.log("note: the C library is not glibc: freed memory goes back to the system "
                 "every iteration, which slows CPU training")
    configure_determinism(args.deterministic, process.device)
    return process


def finish_distributed(process):
    if process.world_size > 1:
        dist.destroy_process_group()


def barrier(process):
    if process.world_size > 1:
        dist.barrier()


def broadcast(tensor, process):
    """Rank 0's tensor on every rank."""
    if process.world_size > 1:
        dist.broadcast(tensor, 0)


def gather(obj, process):
    """The list of every rank's obj (under torchrun), or [obj]."""
    if process.world_size == 1:
        return [obj]
    objects = [None] * process.world_size
    dist.all_gather_object(objects, obj)
    return objects


def pick_device(requested, ngpu=1, local_rank=None):
    """The tutorial's rule, extended: this machine's accelerator (CUDA, MPS, ...) if it has
    one and ngpu > 0, else the CPU. `requested` overrides unless it is 'auto'. A CUDA
    device comes back with its index (cuda -> cuda:0; under torchrun, the local rank's)."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if requested == "auto":
        device = accelerator if ngpu > 0 and accelerator is not None else torch.device("cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise UserError(f"--device {requested}: not a device name; use auto, cpu, cuda, "
                            "cuda:N or mps") from None
        if device.type != "cpu" and (accelerator is None or device.type != accelerator.type
                                     or (device.index or 0) >= torch.accelerator.device_count()):
            raise UserError(f"--device {requested}: this machine has no such device "
                            f"(torch {torch.__version__}); use --device auto or cpu")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return concrete_device(device)


def concrete_device(device):
    """The device with its index: cuda -> cuda:N (the current CUDA device), so that two
    names of one device compare equal."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def configure_determinism(deterministic, device):
    """--deterministic: kernels that give the same bits on every run, at some cost in
    speed. Without it, cuDNN times several convolution algorithms and keeps the fastest,
    and some of its kernels add in an order that changes from run to run: fast, but CUDA
    runs are not repeatable. The CPU's kernels are repeatable either way."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # cuBLAS needs a fixed workspace for repeatable sums; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def keep_freed_memory():
    """glibc hands every large freed block (each activation, each iteration) back to the
    kernel, and the next iteration page-faults it in again: a fifth of a CPU training step
    here. Raising its mmap and trim thresholds keeps that memory in the process. Changes
    no number. Returns False where the C library is not glibc (nothing done)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
    mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD (a C int): keep up to 2 GiB of free heap
    return True


def busy_cores(samples=10, interval=0.05):
    """How many cores other processes keep busy now: the kernel's count of running tasks
    (Linux's /proc/stat), this process's one left out, the median of a few samples. 0
    where it cannot be read."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                counts.append(next(int(line.split()[1]) for line in f
                                   if line.startswith("procs_running")) - 1)
        except (OSError, StopIteration, ValueError):
            return 0.0
        time.sleep(interval)
    return float(sorted(counts)[len(counts) // 2])


def fast_threads(cores, busy):
    """--fast's CPU threads: the cores that others leave free, at least one. With a thread
    per core on a busy machine, each parallel region waits for the thread that the
    scheduler took away; bf16's short kernels have the most regions a second, and lost
    most (docs/performance.md)."""
    return max(1, min(cores, cores - round(busy)))


def amp_supported(device):
    """Whether bf16 autocast pays here: a CUDA device with bf16, or a CPU whose kernels
    compute bf16 natively, as oneDNN itself judges (Intel AMX and AVX-512 BF16, AMD Zen 4 and
    later); elsewhere bf16 would be emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fast_settings(device):
    """What --fast turns on for this device: the speed flags that bench.py measures fastest
    together (docs/performance.md), and how the device was judged."""
    if device.type == "cpu" and amp_supported(device):
        return ("amp", "channels_last"), "a CPU with native bf16"
    if device.type == "cpu":
        return ("channels_last",), "a CPU without native bf16"
    if device.type == "cuda":
        return ("amp", "channels_last"), "CUDA"
    return (), device.type


class Autocast(nn.Module):
    """Runs a network under bf16 autocast and returns float32."""

    def __init__(self, model, device_type):
        super().__init__()
        self.net = model
        self.device_type = device_type

    def forward(self, input):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(input).float()


def prepare_for_training(model, args, process, logits=False):
    """Wraps a network for speed and scale, each wrapper only when the resolved settings ask:
    channels-last, SyncBatchNorm, bf16 autocast, torch.compile, then nn.DataParallel (--ngpu,
    the tutorial's) or DistributedDataParallel (torchrun). The unwrapped model keeps the
    parameters, the state dict and the tutorial's layout."""
    device = process.device
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces layers in place
    # logits: D without its final Sigmoid (sharing its parameters); the criterion takes
    # the Sigmoid in (BCEWithLogitsLoss: the same function, computed stably) or needs none
    net = model.main[:-1] if logits else model
    if args.amp:
        net = Autocast(net, device.type)
    if args.compile:
        net = torch.compile(net)
    if process.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    elif device.type == "cuda" and args.ngpu > 1:
        net = nn.DataParallel(net, list(range(args.ngpu)))
    return net


def check_network_memory(args, process, Generator, Discriminator):
    """Before anything is built: refuses a run whose networks (the tutorial's classes) and
    one step's activations would not fit the device's memory (CUDA) or the machine's (CPU)."""
    needed, params = step_memory(args, args.batch_size // process.world_size, Generator, Discriminator)
    device = process.device
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        return
    if needed > available:
        raise UserError(f"--image-size {args.image_size}: one training step would need about "
                        f"{needed / 2**30:,.1f} GiB ({params / 1e6:,.0f} million weights with "
                        "their gradients and Adam's moments, and the activations of a batch of "
                        f"{args.batch_size // process.world_size}), more than the "
                        f"{available / 2**30:,.1f} GiB of this {device.type}; use a smaller "
                        "--image-size, --batch-size, --ngf or --ndf")


def step_memory(args, batch, Generator, Discriminator):
    """(bytes, weights) of a float32 training step, estimated from shapes alone (no memory
    is touched): weights, gradients and Adam's two moments, plus each layer's output in
    G's pass and D's three passes, kept for backward, and twice as much again for the
    gradients and temporaries of backward. The default run comes to 1.2 GiB; on a CPU it
    peaks at about 1.5 GiB RSS, the interpreter and libraries included."""
    outputs = []
    with torch.device("meta"):
        netG = Generator(args.nz, args.ngf, args.nc, args.image_size)
        netD = Discriminator(args.nc, args.ndf, args.image_size)
        for layer in [*netG.main, *netD.main]:
            if not getattr(layer, "inplace", False):  # an in-place ReLU keeps no tensor of its own
                layer.register_forward_hook(lambda module, inputs, output: outputs.append(output.numel()))
        fake = netG(torch.empty(batch, args.nz, 1, 1))
        d_count = len(outputs)
        netD(fake)
    weights = sum(p.numel() for net in (netG, netD) for p in net.parameters())
    activations = sum(outputs[:d_count]) + 3 * sum(outputs[d_count:])
    return 4 * (4 * weights + 3 * activations), weights
