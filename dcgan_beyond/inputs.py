"""Every input checked before the run writes or downloads anything, the cheap checks first,
so that a refused run leaves every earlier result as it was."""
import os

from .checkpoints import check_same_data, checkpoint_path
from .data import check_cache_folder, open_eval_images
from .devices import barrier, check_network_memory
from .download import download_celeba, wait_for_download
from .errors import UserError
from .fidelity import inception_weights, needs_inception
from .outdir import check_free
from .sharing import check_token
from .tensorboard_log import summary_writer


def check(args, process, checkpoint, Generator, Discriminator):
    """Before the dataset is opened: the networks (the tutorial's classes) against the
    device's memory, TensorBoard, a run that holds the outdir now, an earlier run's
    checkpoint there, the Hub token of --push-to-hub; then --download fetches CelebA (the
    other ranks wait for it)."""
    check_network_memory(args, process, Generator, Discriminator)
    if args.tensorboard:
        summary_writer()
    if process.writes:
        check_free(args.outdir)
    if process.writes and checkpoint is None and os.path.exists(checkpoint_path(args.outdir)):
        raise UserError(f"--outdir {args.outdir}: holds the checkpoint of an earlier run; "
                        "continue it with --resume, or start afresh in another --outdir (or "
                        f"after deleting {checkpoint_path(args.outdir)})")
    if args.push_to_hub and process.writes:
        check_token()
    if args.download or args.download_from:
        if process.writes:
            download_celeba(args.dataroot, args.download_from)
        else:
            wait_for_download(args.dataroot, process)
    barrier(process)


def check_images(args, process, checkpoint, images):
    """Once the dataset is open: the same images as a resumed run's, the held-out ones
    (returned, or None), the cache folder, and last FID's Inception weights (92 MB)."""
    if checkpoint is not None:
        check_same_data(checkpoint, images, args, process)
    held_out = open_eval_images(args.eval_dataroot, images) if args.eval_every else None
    if process.writes:
        check_cache_folder(images, args)
    if args.eval_every and needs_inception(args.eval_metrics):
        inception_weights(args.fid_weights)  # or one line: before anything is written
    return held_out
