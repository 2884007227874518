"""The command line: the parsers (a group of flags a concern), the configuration resolved
once, and one line (never a traceback) for whatever stops a command."""
import argparse
import math
import os
import signal
import sys

from .checkpoints import checkpoint_path, load_checkpoint
import torch

from .devices import (amp_supported, busy_cores, fast_settings, fast_threads, launcher_rank,
                      tell_launcher)
from .errors import UserError, reason
from .fidelity import FID_SAMPLES, INCEPTION_FILE, needs_inception
from .metrics import EVAL_SAMPLES
from .stopping import FAILURE_EXIT, Interrupted
from .techniques import DIFFAUG_POLICIES
from .time_limit import parse_duration


# Settings that define the models' shapes or the meaning of an iteration: a resumed run
# cannot change them.
FIXED_ON_RESUME = ("nz", "ngf", "ndf", "nc", "image_size", "batch_size", "spectral_norm")
# Flags that steer one invocation only; a resumed run does not inherit them. Its limits
# (--num-epochs, --max-iters) it keeps, unless the command line gives new ones.
PER_INVOCATION = ("resume", "download", "download_from", "allow_changed_data")


def fid_or_kid(args):
    return bool(args.eval_every) and needs_inception(args.eval_metrics)


# Flags that do nothing without another: (the flag, what it needs, whether the settings
# have it). A flag typed without what it needs gets one note line at the start.
FLAG_NEEDS = (
    ("eval_metrics", "--eval-every N (it says what --eval-every measures)", lambda a: a.eval_every),
    ("eval_samples", "--eval-every N", lambda a: a.eval_every),
    ("eval_dataroot", "--eval-every N", lambda a: a.eval_every),
    ("fid_weights", "FID or KID (--eval-every N --eval-metrics fid or kid)", fid_or_kid),
    ("ema_rampup", "--ema DECAY", lambda a: a.ema is not None),
    ("allow_changed_data", "--resume", lambda a: a.resume is not None),
    ("cache_dir", "the decode-once cache (dropped by --no-cache) or FID and KID",
     lambda a: not a.no_cache or fid_or_kid(a)),
)


def flag_name(dest):
    return "--" + dest.replace("_", "-")


def idle_flag_notes(args, given):
    """One note for each flag given on this command line that has no effect without another
    (FLAG_NEEDS)."""
    return [f"note: {flag_name(flag)} has no effect without {needs}"
            for flag, needs, present in FLAG_NEEDS if flag in given and not present(args)]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UserError: one line, no usage block."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless it has none or its help already says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def number(name, convert, accept, requirement):
    """An argparse type: `convert` the text, then refuse a value that `accept` rejects
    with "must be <requirement>, not <text>". argparse names a failed conversion by
    `name` ("invalid positive_int value: 'two'")."""
    def parse(text):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text}")
        return value
    parse.__name__ = name
    return parse


positive_int = number("positive_int", int, lambda v: v >= 1, "a whole number of at least 1")
non_negative_int = number("non_negative_int", int, lambda v: v >= 0, "a whole number of at least 0")
at_least_two = number("at_least_two", int, lambda v: v >= 2, "at least 2")
positive_float = number("positive_float", float, lambda v: v > 0 and not math.isinf(v), "a positive number")
unit_interval = number("unit_interval", float, lambda v: 0 <= v < 1, "at least 0 and below 1")


def diffaug_policy(text):
    """--diffaug's value: a comma-separated subset of DIFFAUG_POLICIES, or 'none'."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in DIFFAUG_POLICIES + ("none",)]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a DiffAugment policy: give a comma-separated subset of "
            f"{','.join(DIFFAUG_POLICIES)}, or none")
    return ",".join(names)


def metric_list(text):
    """--eval-metrics' and --metrics' value: a comma-separated subset of swd,fid,kid."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in ("swd", "fid", "kid") for name in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated subset of swd,fid,kid")
    return ",".join(dict.fromkeys(names))


def duration(text):
    """--max-time's value in seconds: 90m, 2h, 1h30m, 3600s or 3600."""
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration such as 90m, 2h, 1h30m or 3600 "
                                         f"(seconds), not {text}")
    return seconds


# torch seeds are 64-bit; each rank, and a reseeded resume, adds a little to it
seed_number = number("seed_number", int, lambda v: 0 <= v < 2 ** 63,
                     f"a whole number from 0 to {2 ** 63 - 1}")


def image_side(text):
    """--image-size's value: a power of two of at least 32."""
    value = int(text)
    if value < 32 or value & (value - 1):
        raise argparse.ArgumentTypeError(
            f"{text} is not a size the DCGAN layers can make: use a power of two "
            "of at least 32 (32, 64, 128, 256, ...)")
    return value


def get_args_parser(inputs):
    """The training command's flags, a group each concern; each default of the tutorial's
    group is its value in `inputs` (dcgan.py's TUTORIAL_INPUTS). A new feature adds its own
    group here: one function, one call."""
    parser = ArgumentParser(
        prog="dcgan.py", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Train the DCGAN of the PyTorch 'DCGAN faces' tutorial. "
                    "Other commands: 'dcgan.py generate --help', 'dcgan.py evaluate --help', "
                    "'dcgan.py push --help'. "
                    "To train on several GPUs or machines, start it with torchrun "
                    "(torchrun --nproc_per_node N dcgan.py ...); --ngpu is the tutorial's "
                    "single-process nn.DataParallel.")
    add_tutorial_flags(parser, inputs)
    add_run_flags(parser)
    add_speed_flags(parser)
    add_scale_flags(parser)
    add_better_faces_flags(parser)
    add_measurement_flags(parser)
    add_sharing_flags(parser)
    return parser


def add_tutorial_flags(parser, inputs):
    """The tutorial's inputs (dcgan.py's TUTORIAL_INPUTS), each a flag of the same name."""
    group = parser.add_argument_group("the tutorial's hyperparameters")
    group.add_argument("--dataroot", default=inputs["dataroot"],
                       help="images: DIR/img_align_celeba/*.jpg (the tutorial's "
                            "layout), any ImageFolder, or a flat folder of images")
    group.add_argument("--workers", type=non_negative_int, default=inputs["workers"],
                       help="processes that decode images")
    group.add_argument("--batch-size", type=positive_int, default=inputs["batch_size"],
                       help="images per iteration (the global batch under torchrun)")
    group.add_argument("--image-size", type=image_side, default=inputs["image_size"],
                       help="side of the square training images: a power of two >= 32")
    group.add_argument("--nc", type=int, choices=(1, 3), default=inputs["nc"],
                       help="colour channels: 3 for RGB, 1 for grayscale")
    group.add_argument("--nz", type=positive_int, default=inputs["nz"],
                       help="length of the latent vector z")
    group.add_argument("--ngf", type=positive_int, default=inputs["ngf"],
                       help="feature maps in the generator")
    group.add_argument("--ndf", type=positive_int, default=inputs["ndf"],
                       help="feature maps in the discriminator")
    group.add_argument("--num-epochs", type=positive_int, default=inputs["num_epochs"],
                       help="passes over the dataset")
    group.add_argument("--lr", type=positive_float, default=inputs["lr"],
                       help="Adam learning rate of both networks")
    group.add_argument("--beta1", type=unit_interval, default=inputs["beta1"],
                       help="Adam beta1 of both networks")
    group.add_argument("--ngpu", type=non_negative_int, default=inputs["ngpu"],
                       help="GPUs for nn.DataParallel; 0 trains on the CPU (no CUDA, MPS or "
                            "other accelerator)")
    group.add_argument("--seed", type=seed_number, default=inputs["seed"], help="random seed")


def add_run_flags(parser):
    """Where the run writes, on which device, how long, and how it resumes and stops."""
    group = parser.add_argument_group("the run")
    group.add_argument("--outdir", default="outputs", help="where every output is written")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA if available and --ngpu > 0, then MPS, then other "
                            "accelerators, then CPU), cpu, cuda, cuda:1, mps, ...")
    group.add_argument("--max-iters", type=positive_int, default=None,
                       help="stop after this many iterations and still write every output "
                            "(a resume keeps it; give a larger one to train on)")
    group.add_argument("--max-time", type=duration, default=None, metavar="DURATION",
                       help="stop when the run's training time (earlier processes of a resumed "
                            "run included) reaches this, e.g. 90m, 2h, 1h30m or 3600 (seconds), "
                            "and still write every output (a resume keeps it; give a longer one "
                            "to train on)")
    group.add_argument("--log-every", type=positive_int, default=50,
                       help="print the statistics line every this many batches of an epoch")
    group.add_argument("--sample-every", type=positive_int, default=500,
                       help="save a fixed-noise grid every this many iterations")
    group.add_argument("--checkpoint-every", type=positive_int, default=None,
                       help="write checkpoint.pt every this many iterations (default: "
                            "--sample-every); also at each epoch's end, at the end and on "
                            "Ctrl-C, SIGTERM, SIGHUP or SIGUSR1")
    group.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                       help="continue the run saved in CHECKPOINT (default: "
                            "OUTDIR/checkpoint.pt) with its configuration; flags given "
                            "here override what may change")
    group.add_argument("--on-failure", choices=("warn", "stop"), default="warn",
                       help="when the health monitor sees the run failing (D has won, G has "
                            "collapsed, no learning): warn once, or stop with a checkpoint "
                            f"and exit status {FAILURE_EXIT}")
    group.add_argument("--deterministic", action="store_true",
                       help="repeatable on a GPU: deterministic kernels and no cuDNN "
                            "autotuning (slower; CPU runs are repeatable without it)")
    group.add_argument("--allow-changed-data", action="store_true",
                       help="with --resume: go on although the images changed since the "
                            "checkpoint (the run is then no longer the uninterrupted one)")
    group.add_argument("--download", action="store_true",
                       help="first fetch CelebA into DATAROOT/img_align_celeba: the tutorial's "
                            "own copy, then Hub copies, then Google Drive, each checked against "
                            "the official SHA-256; resumes; a zip already in DATAROOT is checked "
                            "and unpacked (see data/README.md)")
    group.add_argument("--download-from", default=None, metavar="SOURCE",
                       help="fetch CelebA from a source of your own (implies --download): an "
                            "https:// (or http://) URL of img_align_celeba.zip, or a Hub repo "
                            "that holds one, [datasets/|spaces/]OWNER/NAME[@REVISION]")


def add_speed_flags(parser):
    """Speed: the cache and the opt-in wrappers."""
    group = parser.add_argument_group("speed (none of these changes a number unless it says so)")
    group.add_argument("--no-cache", action="store_true",
                       help="decode every JPEG in every epoch through DataLoader workers, "
                            "as the tutorial does, instead of the decode-once cache")
    group.add_argument("--cache-dir", default=None,
                       help="where the decode-once cache lives (default: "
                            "$XDG_CACHE_HOME/dcgan-faces or ~/.cache/dcgan-faces)")
    group.add_argument("--fast", action="store_true",
                       help="the speed flags measured fastest on this device, printed at the "
                            "start: on a CPU with native bf16 --amp --channels-last, on other "
                            "CPUs --channels-last, on CUDA --amp --channels-last; on a CPU "
                            "that other processes keep busy, only the cores they leave free "
                            "(changes the numbers; a resume keeps them)")
    group.add_argument("--threads", type=positive_int, default=None,
                       help="CPU threads for training (default: torch's, one per core; --fast "
                            "takes fewer on a machine that other processes keep busy). The last "
                            "digits change with the count; a resume keeps it")
    group.add_argument("--amp", action="store_true",
                       help="bf16 autocast on CUDA or on a CPU with native bf16, with D's "
                            "Sigmoid folded into BCEWithLogitsLoss (changes the numbers)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile G and D (changes the numbers slightly)")
    group.add_argument("--channels-last", action="store_true",
                       help="channels-last memory format (changes the numbers slightly)")


def add_scale_flags(parser):
    """Scale: what only torchrun's several processes use."""
    group = parser.add_argument_group("scale (under torchrun)")
    group.add_argument("--sync-bn", action="store_true",
                       help="BatchNorm statistics over the global batch (SyncBatchNorm)")


def add_better_faces_flags(parser):
    """Better faces: opt-in changes to the training."""
    group = parser.add_argument_group(
        "better faces (each changes the numbers; see docs/better-faces.md)")
    group.add_argument("--diffaug", nargs="?", const="color,translation,cutout", default=None,
                       type=diffaug_policy, metavar="POLICY",
                       help="DiffAugment every image D sees: a comma-separated subset of "
                            "color,translation,cutout (all three if none is given; 'none' "
                            "switches every one off)")
    group.add_argument("--spectral-norm", action="store_true",
                       help="spectral normalisation of D's convolutions; D loses its "
                            "BatchNorm layers (cannot change on resume)")
    group.add_argument("--loss", choices=("bce", "hinge"), default="bce",
                       help="bce: the tutorial's BCELoss; hinge: the hinge loss of "
                            "SNGAN and BigGAN (D returns logits)")
    group.add_argument("--lr-d", type=positive_float, default=None,
                       help="D's Adam learning rate (default: --lr)")
    group.add_argument("--lr-g", type=positive_float, default=None,
                       help="G's Adam learning rate (default: --lr)")


def add_measurement_flags(parser):
    """Measurement: SWD, FID and KID, the EMA generator, TensorBoard."""
    group = parser.add_argument_group("measurement")
    group.add_argument("--eval-every", type=positive_int, default=None,
                       help="every this many iterations and at the end, the sliced "
                            "Wasserstein distance (SWD) of G's images to real ones")
    group.add_argument("--eval-metrics", type=metric_list, default="swd",
                       help="what --eval-every measures: a comma-separated subset of "
                            "swd,fid,kid (FID and KID: torch-fidelity's Inception)")
    group.add_argument("--eval-samples", type=positive_int, default=None,
                       help=f"images per evaluation: each of SWD's two sets (default "
                            f"{EVAL_SAMPLES}); for FID and KID both the generated and the real "
                            f"images (default: {FID_SAMPLES:,} generated against all real "
                            "images, the papers' protocol)")
    group.add_argument("--fid-weights", default=None, metavar="PATH",
                       help=f"torch-fidelity's Inception weights ({INCEPTION_FILE}), for "
                            "machines without network (default: download once)")
    group.add_argument("--eval-dataroot", default=None,
                       help="held-out real images for SWD, FID and KID (default: the "
                            "training images)")
    group.add_argument("--ema", type=unit_interval, default=None, metavar="DECAY",
                       help="keep an exponential moving average of G's weights with "
                            "this decay (0.999 is usual); figures, samples and SWD use it")
    group.add_argument("--ema-rampup", type=unit_interval, default=0.05, metavar="RATIO",
                       help="EMA warm-up (StyleGAN2's): average over at most this "
                            "fraction of the iterations so far, so that short runs "
                            "gain too; 0 uses DECAY from the start")
    group.add_argument("--tensorboard", action="store_true",
                       help="also log to OUTDIR/tensorboard (needs the tensorboard package)")


def add_sharing_flags(parser):
    """Sharing: the trained generator on the Hugging Face Hub."""
    group = parser.add_argument_group("sharing (see docs/sharing.md)")
    group.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME",
                       help="when the run completes, push its generator, card, samples and "
                            "loss curve to this Hub model repo in one commit, as 'dcgan.py "
                            "push' does (a stopped run pushes nothing; the token: HF_TOKEN or "
                            "'hf auth login')")


def get_subcommand_parser(command, description):
    """The flags that generate and evaluate share: which generator, on which device."""
    parser = ArgumentParser(prog=f"dcgan.py {command}", allow_abbrev=False,
                            formatter_class=HelpFormatter,
                            description=description)
    parser.add_argument("--checkpoint", default="outputs/checkpoint.pt",
                        help="checkpoint.pt (its EMA generator if it has one), netG.pt, or "
                             "hf://OWNER/NAME[@REVISION] (a generator that 'dcgan.py push' "
                             "put on the Hugging Face Hub)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps, ...")
    return parser


def get_generate_parser():
    parser = get_subcommand_parser(
        "generate", "Write images from a trained generator (checkpoint.pt or netG.pt); "
                    "needs neither the dataset nor a GPU.")
    parser.add_argument("--outdir", default=None,
                        help="where to write (default: a samples/ folder beside the checkpoint)")
    parser.add_argument("--num-samples", type=positive_int, default=64,
                        help="how many images")
    parser.add_argument("--seed", type=seed_number, default=999, help="seed of the latent vectors")
    parser.add_argument("--single-files", action="store_true",
                        help="also write each image as its own PNG (for FID tools)")
    parser.add_argument("--interpolate", action="store_true",
                        help="instead, walk the latent space: --rows rows that morph "
                             "from one face to another in --steps steps (slerp)")
    parser.add_argument("--rows", type=positive_int, default=8, help="rows of the walk")
    parser.add_argument("--steps", type=at_least_two, default=10, help="images per row")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="images generated at once")
    return parser


def get_evaluate_parser():
    parser = get_subcommand_parser(
        "evaluate", "Print the sliced Wasserstein distance (SWD), FID or KID between a "
                    "trained generator's images and real ones, beside the real-vs-real floor.")
    parser.add_argument("--metrics", type=metric_list, default="swd",
                        help="a comma-separated subset of swd,fid,kid")
    parser.add_argument("--fid-weights", default=None, metavar="PATH",
                        help=f"torch-fidelity's Inception weights ({INCEPTION_FILE}) (default: "
                             "download once)")
    parser.add_argument("--dataroot", default=None,
                        help="real images (default: the checkpoint's --dataroot)")
    parser.add_argument("--eval-dataroot", default=None,
                        help="held-out real images (default: the checkpoint's, if any)")
    parser.add_argument("--eval-samples", type=positive_int, default=None,
                        help=f"images per set, real ones too (default: the checkpoint's, else "
                             f"{EVAL_SAMPLES} for SWD and the papers' {FID_SAMPLES:,} generated "
                             "against all real for FID and KID)")
    parser.add_argument("--seed", type=seed_number, default=None,
                        help="seed (default: the checkpoint's, so numbers match training's)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="processes that decode images")
    parser.add_argument("--cache-dir", default=None, help="as in training")
    return parser


def get_push_parser():
    parser = ArgumentParser(
        prog="dcgan.py push", allow_abbrev=False, formatter_class=HelpFormatter,
        description="Share a trained generator on the Hugging Face Hub: config.json, "
                    "model.safetensors, a model card, samples.png and the loss curve, in one "
                    "commit. The token comes from HF_TOKEN or 'hf auth login', never a flag.")
    parser.add_argument("--checkpoint", default="outputs/checkpoint.pt",
                        help="checkpoint.pt (its EMA generator if it has one) or netG.pt")
    parser.add_argument("--repo-id", required=True, metavar="OWNER/NAME",
                        help="the model repo (made if missing)")
    parser.add_argument("--private", action="store_true",
                        help="make a new repo private (an existing one keeps its visibility)")
    parser.add_argument("--revision", default=None, metavar="BRANCH",
                        help="commit to this branch, which must exist (default: main)")
    parser.add_argument("--commit-message", default=None, help="the commit's message")
    return parser


def parse_train_args(parser, argv):
    """Parses the training flags; returns (args, given), given holding the flags typed."""
    args = parser.parse_args(argv)
    # argparse leaves an attribute that is already set alone unless the flag is given, so
    # a namespace of sentinels tells typed flags from defaults.
    unset = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: unset for k in vars(args)}))
    given = {k: v for k, v in vars(probe).items() if v is not unset}
    return args, given


def settings(parser, config=(), given=()):
    """The training settings as a dict: the parser's defaults, then a checkpoint's
    configuration (`config`), then the flags given on this command line (`given`)."""
    result = vars(parser.parse_args([]))
    result.update({k: v for k, v in dict(config).items() if k in result})
    result.update(given)
    return result


def resolve_resume(parser, args, given):
    """Turns --resume into the checkpoint's configuration with the allowed overrides.

    Returns (args, checkpoint) where checkpoint is the loaded dict, or None for a new run.
    """
    if args.resume is None:
        return args, None
    path = args.resume or checkpoint_path(args.outdir)
    checkpoint = load_checkpoint(path, "cpu", flag="--resume", whole=True)
    saved = settings(parser, checkpoint["config"])
    fixed = [f"{flag_name(k)} {saved[k]} -> {given[k]}"
             for k in FIXED_ON_RESUME if k in given and given[k] != saved[k]]
    if fixed:
        raise UserError(f"--resume {path}: the run was trained with other settings, which "
                        f"cannot change on resume: {', '.join(fixed)}; drop these flags, or "
                        "start a new run in another --outdir")
    changed = [f"{flag_name(k)} {saved[k]} -> {v}" for k, v in given.items()
               if k not in PER_INVOCATION and k != "outdir" and v != saved[k]]
    resumed = settings(parser, checkpoint["config"], given)
    resumed.update({key: given.get(key) for key in PER_INVOCATION}, resume=path)
    resumed["outdir"] = given.get("outdir") or os.path.dirname(os.path.abspath(path))
    if changed and launcher_rank() == 0:  # torchrun starts one per rank
        print(f"Resuming with changed settings: {', '.join(changed)}")
    return argparse.Namespace(**resumed), checkpoint


def resolve_settings(args, process):
    """The one place where settings follow from others or from this machine (the checkpoint
    interval, the workers, features this device or job cannot give: one line each). The
    run prints the settings it returns, saves them in config.json and never changes them."""
    args = argparse.Namespace(**vars(args))
    args.checkpoint_every = args.checkpoint_every or args.sample_every
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.workers > usable:
        process.log(f"note: --workers {args.workers} is more than the {usable} CPU cores here can "
                 f"use; decoding with {usable}")
        args.workers = usable
    if args.fast:
        chosen, judged = fast_settings(process.device)
        for flag in chosen:
            setattr(args, flag, True)
        process.log(f"note: --fast on {judged}: {' '.join(flag_name(f) for f in chosen) or 'nothing to add'}"
                 " (the fastest measured there; the numbers change)")
        if process.device.type == "cpu" and args.threads is None:
            # kept in the configuration: a resume computes with the same thread count
            cores, busy = torch.get_num_threads(), busy_cores()
            args.threads = fast_threads(cores, busy)
            if args.threads < cores:
                process.log(f"note: --fast: other processes keep {busy:.1f} of the {cores} cores "
                            f"busy; training with {args.threads} thread(s), which measured "
                            "faster under load (--threads N chooses; a resume keeps it)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.amp and not amp_supported(process.device):
        process.log(f"note: --amp needs bf16 kernels (CUDA, or a CPU with native bf16: Intel AMX or "
                 f"AVX-512 BF16, AMD Zen 4 and later), which {process.device} lacks; training in float32")
        args.amp = False
    if args.amp and args.compile and args.channels_last and process.device.type == "cuda":
        process.log("note: --amp --compile --channels-last together crashed in torch.compile's "
                 "backward pass on CUDA; training without --channels-last")
        args.channels_last = False
    if args.sync_bn and process.world_size == 1:
        process.log("note: --sync-bn matters only under torchrun with several processes")
        args.sync_bn = False
    elif args.sync_bn and process.device.type != "cuda":
        process.log(f"note: --sync-bn needs CUDA (SyncBatchNorm); BatchNorm statistics stay per "
                 f"process on {process.device.type}")
        args.sync_bn = False
    return args


def parse(argv, inputs):
    """The command line as (command, args, checkpoint): "generate", "evaluate" or "push" with their
    flags, or "train" with its settings (a resumed run's come from its checkpoint, loaded
    here, else None). `inputs`: the defaults of the tutorial's flags."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generate"]:
        return "generate", get_generate_parser().parse_args(argv[1:]), None
    if argv[:1] == ["evaluate"]:
        return "evaluate", get_evaluate_parser().parse_args(argv[1:]), None
    if argv[:1] == ["push"]:
        return "push", get_push_parser().parse_args(argv[1:]), None
    parser = get_args_parser(inputs)
    args, given = parse_train_args(parser, argv)
    args, checkpoint = resolve_resume(parser, args, given)
    if launcher_rank() == 0:  # torchrun starts one process per rank
        for note in idle_flag_notes(args, given):
            print(note)
    return "train", args, checkpoint


def exit_status(error):
    """The exit status for what stopped a command, said in one line on stderr: a UserError
    (status 2), a failed write (2), a second stop signal, Ctrl-C. Under torchrun a problem
    of every rank is said by rank 0 alone; the other ranks leave quietly with status 0, so
    that the launcher names rank 0's failure, not theirs."""
    rank = launcher_rank()
    if isinstance(error, UserError):
        if rank == 0 or not error.same_on_every_rank:
            line = f"dcgan.py: error: {'' if rank == 0 else f'(rank {rank}) '}{error}"
            print(line, file=sys.stderr)
            tell_launcher(line)
            return 2
        return 0
    if isinstance(error, OSError):  # a write that failed mid-run, a full disk say
        print(f"dcgan.py: error: {error.filename or 'a file'}: {reason(error)}; what was "
              "written before is intact (checkpoints are replaced whole): fix this, then run "
              "again (a run that wrote a checkpoint goes on with --resume)", file=sys.stderr)
        return 2
    if isinstance(error, Interrupted):
        print(f"dcgan.py: stopped at once by a second {signal.Signals(error.signum).name}; "
              "the last checkpoint is as it was", file=sys.stderr)
        return 128 + error.signum
    print("dcgan.py: interrupted", file=sys.stderr)
    return 130
