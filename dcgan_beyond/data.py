"""Data: the dataset's checks, the decode-once pixel cache and the batches it feeds."""
import contextlib
import functools
import glob
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torchvision.datasets as dset
import torchvision.transforms as transforms
from PIL import Image
from tqdm import tqdm

from .devices import barrier, concrete_device
from .errors import UserError, reason
from .files import atomic_write, size_text, take_lock, writable_folder
from .stopping import ignore_interrupts


CELEBA_HELP = ("get CelebA's img_align_celeba.zip from the official site "
               "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html) or the Kaggle mirror "
               "(kaggle.com/datasets/jessicali9530/celeba-dataset), or try --download; "
               "see data/README.md")


class FaceImages(dset.ImageFolder):
    """The tutorial's ImageFolder with three additions: a flat folder of images works too,
    images are converted to `nc` channels, and an unreadable image yields None (named on
    stderr) instead of ending a ten-hour run. `transform` is the tutorial's: its steps
    before ToTensor make the uint8 pixels that the decode-once cache keeps; ToTensor and
    Normalize(0.5, 0.5) are then done on the device (normalize_pixels, bit-identical)."""

    def __init__(self, root, transform, nc=3):
        self.is_flat = any(entry.is_file() and dset.folder.has_file_allowed_extension(
            entry.name, dset.folder.IMG_EXTENSIONS) for entry in os.scandir(root))
        steps = list(transform.transforms)
        cut = next((k for k, step in enumerate(steps) if isinstance(step, transforms.ToTensor)),
                   len(steps))
        self.pixel_transform = transforms.Compose(steps[:cut])
        self.nc = nc
        super().__init__(root, transform=transform, allow_empty=True,
                         loader=functools.partial(load_image, mode="L" if nc == 1 else "RGB"))

    def find_classes(self, directory):
        # A flat folder is one class whose folder is the root itself.
        return ([""], {"": 0}) if self.is_flat else super().find_classes(directory)

    def _open(self, index):
        path = self.samples[index][0]
        try:
            return self.loader(path)  # convert() decodes, so a broken file fails here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            print(f"warning: skipping unreadable image {path}: {error}", file=sys.stderr)
            return None

    def __getitem__(self, index):
        """The tutorial's transformed image, or None if unreadable."""
        image = self._open(index)
        return None if image is None else self.transform(image)

    def pixels(self, index):
        """The image after the steps before ToTensor as a CHW uint8 array, or None."""
        image = self._open(index)
        if image is None:
            return None
        array = np.asarray(self.pixel_transform(image), dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def like(self, root):
        """Another folder's images, transformed as these are (held-out images)."""
        return open_images(root, self.transform, self.nc, "--eval-dataroot")


def pixel_transform(image_size):
    """The steps of the tutorial's transform that make pixels (Resize, CenterCrop): what
    `evaluate` compares, with no training dataset at hand."""
    return transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])


def open_images(dataroot, transform, nc=3, flag="--dataroot"):
    """FaceImages(dataroot, transform, nc), or one line that explains what is wrong with
    the folder."""
    if not os.path.exists(dataroot):
        raise UserError(f"{flag} {dataroot}: no such folder; {CELEBA_HELP}, and unzip it so "
                        f"that {os.path.join(dataroot, 'img_align_celeba', '000001.jpg')} exists")
    if not os.path.isdir(dataroot):
        raise UserError(f"{flag} {dataroot}: is a file, not a folder; give the folder that "
                        "holds img_align_celeba/ (or the images themselves)")
    try:
        dataset = FaceImages(dataroot, transform, nc)
    except FileNotFoundError:  # ImageFolder: a root with neither images nor subfolders
        dataset = []
    except PermissionError as error:
        raise UserError(f"{flag} {dataroot}: cannot be read ({error.strerror})") from None
    if len(dataset) == 0 and os.path.isfile(os.path.join(dataroot, "img_align_celeba.zip")):
        raise UserError(f"{flag} {dataroot}: holds img_align_celeba.zip but no images yet; add "
                        "--download to check and unpack it (no network needed), or unzip it there")
    if len(dataset) == 0:
        raise UserError(f"{flag} {dataroot}: holds no images "
                        f"({', '.join(dset.folder.IMG_EXTENSIONS[:4])}, ...); expected "
                        f"{os.path.join(dataroot, 'img_align_celeba', '*.jpg')} or a folder "
                        f"of images; {CELEBA_HELP}")
    return dataset


def open_eval_images(eval_dataroot, images):
    """The held-out images of --eval-dataroot, transformed as `images`, or None; without
    them SWD needs two disjoint sets of training images (one to compare with, one for the
    floor)."""
    held_out = eval_dataroot and images.like(eval_dataroot)
    if not held_out and len(images) < 2:
        raise UserError(f"--eval-every: SWD needs at least 2 training images (a set to "
                        f"compare with and a set for the floor), and {images.root} has "
                        f"{len(images)}; add images, or give --eval-dataroot")
    return held_out or None


def image_count(images, pixels):
    """How many images training draws from: the cache's rows (it leaves unreadable images
    out), or the folder's files without one."""
    return len(images) if pixels is None else len(pixels)


def load_image(path, mode):
    """torchvision's PIL loader, converting to `mode` ('RGB' or 'L')."""
    with open(path, "rb") as f:
        return Image.open(f).convert(mode)


class PixelView(torch.utils.data.Dataset):
    """FaceImages.pixels as a dataset, so that DataLoader workers can decode in parallel."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return index, self.images.pixels(index)


def stack_pixels(batch):
    """collate_fn: (readable indices, their pixels in C order, as the cache's), or None."""
    batch = [(i, p) for i, p in batch if p is not None]
    pixels = np.ascontiguousarray(np.stack([p for _, p in batch])) if batch else None
    return [i for i, _ in batch], None if pixels is None else torch.from_numpy(pixels)


def decoded_pixels(images, index_batches, workers, desc=None, pin=False):
    """The one decode path: DataLoader workers decode images.pixels of each index batch, in
    order, and yield (the indices kept, uint8 tensor k x C x H x W; page-locked with `pin`).
    An unreadable image is left out (FaceImages names it); `desc` shows a progress bar."""
    loader = torch.utils.data.DataLoader(
        PixelView(images), batch_sampler=[list(map(int, b)) for b in index_batches],
        num_workers=min(workers, len(index_batches)), collate_fn=stack_pixels,
        pin_memory=pin, worker_init_fn=ignore_interrupts,
        # A generator of its own, so that decoding draws nothing from the tutorial's stream.
        generator=torch.Generator())
    scale = len(index_batches[0]) if index_batches else 1
    for kept, batch in tqdm(loader, desc=desc, unit_scale=scale, unit="img", leave=False,
                            disable=None if desc else True):
        if batch is not None:
            yield kept, batch


def decoded_batches(images, index_batches, workers, device):
    """--no-cache, the tutorial's pipeline: every image decoded in every epoch by
    DataLoader workers, then normalised on the device as the cache's batches are."""
    for _, batch in decoded_pixels(images, index_batches, workers, pin=device.type == "cuda"):
        yield normalize_pixels(batch.to(device, non_blocking=True))


def real_uint8(images, pixels, indices, workers):
    """The real images at indices as uint8, from the cache when there is one."""
    if pixels is not None:
        return pixels[torch.as_tensor(indices)].cpu()
    chunks = [indices[k:k + 256] for k in range(0, len(indices), 256)]
    batches = [batch for _, batch in decoded_pixels(images, chunks, workers,
                                                    "decoding evaluation images")]
    if not batches:
        raise UserError(f"--eval-dataroot {images.root}: none of its images could be read")
    return torch.cat(batches)


@functools.lru_cache(maxsize=8)  # one stat a file (3 s for CelebA), once a run
def file_digest(images):
    """A digest of the file list: names, sizes and modification times. It changes when an
    image is added, removed or edited in place."""
    digest = hashlib.sha256()
    for path, _ in images.samples:
        st = os.stat(path)
        # fsencode: a name need not be valid UTF-8
        digest.update(b"\0" + os.fsencode(os.path.relpath(path, images.root))
                      + f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_folder(cache_dir=None):
    """--cache-dir, or by default $XDG_CACHE_HOME/dcgan-faces (~/.cache/dcgan-faces)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return cache_dir or os.path.join(base, "dcgan-faces")


CACHE_VERSION = 1


def cache_path(images, image_size, nc, cache_dir):
    """The cache file of these images at this size: a changed dataset gets another one."""
    key = hashlib.sha256(f"{CACHE_VERSION} {image_size} {nc} {images.pixel_transform} "
                         f"{file_digest(images)}".encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"faces-{len(images)}-{nc}x{image_size}-{key}.npy")


def load_pixel_cache(images, image_size, nc, cache_dir, workers, build=True):
    """The whole dataset after Resize and CenterCrop as one uint8 tensor N x C x H x W,
    decoded once into a .npy file that later runs map into memory: the operating system
    keeps one copy of it in its page cache, whichever runs and ranks read it. A damaged
    file is decoded again. Returns None when build is False and there is no intact file
    yet (the other ranks of a torchrun job wait for rank 0). cache_dir None: the default."""
    cache_dir = cache_folder(cache_dir)
    path = cache_path(images, image_size, nc, cache_dir)
    row_shape = (nc, image_size, image_size)
    pixels, problem = open_pixel_cache(path, len(images), row_shape)
    if pixels is not None or not build:
        return pixels
    try:
        os.makedirs(cache_dir, exist_ok=True)
        # one builder at a time; the others then map its file
        with contextlib.closing(take_lock(path + ".lock")):
            pixels, problem = open_pixel_cache(path, len(images), row_shape)
            if pixels is None:
                if problem:
                    print(f"warning: the image cache {path} is damaged ({problem}); "
                          "decoding the images again", file=sys.stderr)
                build_pixel_cache(images, path, row_shape, workers)
                pixels, problem = open_pixel_cache(path, len(images), row_shape)
    except OSError as error:
        raise UserError(f"--cache-dir {cache_dir}: cannot write the image cache "
                        f"({reason(error)}); give a writable --cache-dir, or --no-cache") from None
    return pixels


def open_pixel_cache(path, count, row_shape):
    """(the mapped pixels, None), or (None, what is wrong with the file), or (None, None)
    when there is no file. Checks the sidecar, the header, the dtype, the shape against
    the folder's file count and the file's size against its header."""
    if not os.path.exists(path):
        return None, None
    try:
        with open(path + ".json") as f:
            skipped = json.load(f)["skipped"]
        # mode "c": a writable view whose pages stay the shared page cache unless written
        array = np.load(path, mmap_mode="c")
        expected = (count - len(skipped), *row_shape)
        if array.dtype != np.uint8 or array.shape != expected:
            return None, f"it holds {array.dtype} {array.shape}, not uint8 {expected}"
        if os.path.getsize(path) != array.offset + array.nbytes:
            return None, "its size does not match its header"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, reason(error)
    if skipped:
        print(f"warning: {len(skipped)} unreadable images are left out (listed in "
              f"{path}.json)", file=sys.stderr)
    return torch.from_numpy(array), None


def npy_header(count, row_shape):
    """numpy's .npy header of count uint8 rows; numpy pads it for a row count of up to 21
    digits, so a smaller count can be rewritten in place."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (count, *row_shape)})
    return header.getvalue()


def check_cache_room(cache_dir, count, row_shape):
    """The bytes a cache of count rows needs, or one line when the folder has not that room."""
    needed = len(npy_header(count, row_shape)) + count * math.prod(row_shape)
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise UserError(f"--cache-dir {cache_dir}: the image cache needs {size_text(needed)} "
                        f"and {size_text(free)} is free there; give a --cache-dir with room, "
                        "or --no-cache")
    return needed


def check_cache_folder(images, args):
    """Before anything is written: the cache folder is writable and, unless an intact cache
    of these images is there, has room for one. Nothing is checked with --no-cache."""
    if args.no_cache:
        return
    cache_dir = cache_folder(args.cache_dir)
    writable_folder("--cache-dir", cache_dir)
    row_shape = (args.nc, args.image_size, args.image_size)
    path = cache_path(images, args.image_size, args.nc, cache_dir)
    if not os.path.exists(path):
        check_cache_room(cache_dir, len(images), row_shape)


def build_pixel_cache(images, path, row_shape, workers):
    """Decodes every image straight into a memory-mapped file of the final size, under a
    temporary name, then renames it into place: memory stays a few batches whatever the
    dataset's size, and a killed build never leaves a file that looks complete."""
    for stale in glob.glob(glob.escape(path) + ".*.tmp"):  # a killed build's
        os.unlink(stale)
    row_bytes, count = math.prod(row_shape), len(images)
    header = npy_header(count, row_shape)
    needed = check_cache_room(os.path.dirname(path), count, row_shape)
    start, tmp = time.time(), f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb+") as f:
            if hasattr(os, "posix_fallocate"):  # the disk's blocks now: a full disk is an error here, not a crash later
                os.posix_fallocate(f.fileno(), 0, needed)
            f.truncate(needed)
            f.write(header)
            f.flush()
            rows = np.memmap(f, dtype=np.uint8, mode="r+", offset=len(header),
                             shape=(count, *row_shape))
            kept = []
            chunks = [range(k, min(k + 256, count)) for k in range(0, count, 256)]
            for indices, batch in decoded_pixels(images, chunks, workers, "decoding images once"):
                rows[len(kept):len(kept) + len(batch)] = batch.numpy()
                kept += indices
            rows.flush()
            del rows
            if not kept:
                raise UserError(f"--dataroot {images.root}: none of its {count} images "
                                "could be read")
            if len(kept) < count:  # unreadable images: the rows are contiguous, drop the tail
                f.seek(0)
                f.write(npy_header(len(kept), row_shape))
                f.truncate(len(header) + len(kept) * row_bytes)
            f.flush()
            os.fsync(f.fileno())
        skipped = [images.samples[i][0] for i in sorted(set(range(count)) - set(kept))]
        # The .npy comes last: its existence says the cache is complete.
        atomic_write(path + ".json", lambda f: f.write(json.dumps(
            {"root": os.path.abspath(images.root), "images": count, "skipped": skipped},
            indent=1).encode()))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"Decoded {len(kept)} images once in {time.time() - start:.1f} s into {path}"
          + (f" ({len(skipped)} unreadable skipped)" if skipped else ""))


def load_pixels(args, process, images):
    """The decode-once cache (built by rank 0 while the others wait), or None with
    --no-cache."""
    if args.no_cache:
        return None
    pixels = load_pixel_cache(images, args.image_size, args.nc, args.cache_dir,
                              args.workers, build=process.writes)
    barrier(process)
    if pixels is None:
        pixels = load_pixel_cache(images, args.image_size, args.nc, args.cache_dir, args.workers)
    return pixels


class Batches:
    """The tutorial's dataloader: batches in its shuffle order, as normalised tensors on
    the device, whether the pixels come from the decode-once cache or, with --no-cache,
    from FaceImages and DataLoader workers as in the tutorial.

    The shuffle is drawn by a DataLoader over the image indices, which makes exactly the
    random draws of the tutorial's DataLoader; under torchrun a DistributedSampler gives
    each process its disjoint share of batch_size / world_size images.
    """

    def __init__(self, images, pixels, batch_size, workers, process, seed=0, channels_last=False):
        self.images, self.workers, self.device = images, workers, process.device
        self.channels_last = channels_last
        count = image_count(images, pixels)
        self.sampler = (torch.utils.data.DistributedSampler(
            range(count), num_replicas=process.world_size, rank=process.rank, shuffle=True,
            seed=seed) if process.world_size > 1 else None)
        self.index_loader = torch.utils.data.DataLoader(
            range(count), batch_size=batch_size // process.world_size,
            shuffle=self.sampler is None, sampler=self.sampler)
        self.pixels = pixels_on_device(pixels, process.device) if pixels is not None else None

    def __len__(self):
        return len(self.index_loader)

    def epoch(self, epoch, start=0):
        """The batches of one epoch from batch `start` on. The shuffle's random draws
        happen here, at once, as when the tutorial's loop starts an epoch."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return self._batches(list(self.index_loader)[start:])

    def first(self):
        """One batch, drawn as the tutorial's next(iter(dataloader)) draws it."""
        return next(self._batches([next(iter(self.index_loader))]))

    def _batches(self, index_batches):
        if self.pixels is not None:
            batches = cached_batches(self.pixels, index_batches, self.device)
        else:
            batches = decoded_batches(self.images, index_batches, self.workers, self.device)
        for batch in batches:
            yield batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


def pixels_on_device(pixels, device):
    """The whole cache on the GPU when it fits (no host copies at all), else where it is."""
    if device.type == "cuda" and pixels.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]:
        return pixels.to(device)  # uint8: one byte a pixel
    return pixels


def transfer_kind(source, target):
    """How a batch on `source` reaches `target`: "none" when it is there already (cuda
    and cuda:0 are one place), "pin and copy" from the CPU to CUDA (page-locked memory
    lets the copy overlap the step), else "copy". Only CPU tensors can be pinned."""
    if concrete_device(source) == concrete_device(target):
        return "none"
    return "pin and copy" if source.type == "cpu" and target.type == "cuda" else "copy"


def cached_batches(pixels, index_batches, device):
    """The cache's uint8 rows of each batch, moved to the device and normalised there."""
    move = transfer_kind(pixels.device, device)
    if move == "pin and copy":
        yield from staged_batches(pixels, index_batches, device)
        return
    if pixels.device.type != "cpu" and index_batches:
        # One host-to-device copy of the epoch's indices instead of one per batch.
        sizes = [len(b) for b in index_batches]
        index_batches = torch.cat(index_batches).to(pixels.device).split(sizes)
    for indices in index_batches:
        batch = pixels.index_select(0, indices)
        yield normalize_pixels(batch if move == "none" else batch.to(device))


def staged_batches(pixels, index_batches, device):
    """From a host cache to a GPU: each batch is gathered into one of two pinned buffers
    and copied without blocking, one batch ahead, so that the gather of the next batch
    overlaps the step on the current one."""
    size = max((len(b) for b in index_batches), default=0)
    buffers = [torch.empty((size, *pixels.shape[1:]), dtype=torch.uint8).pin_memory()
               for _ in range(2)]
    copied = [None, None]  # the CUDA event after each buffer's last copy
    ready = None
    for k, indices in enumerate(index_batches):
        if copied[k % 2] is not None:
            copied[k % 2].synchronize()  # its previous copy is done: the buffer is free
        buffer = buffers[k % 2][:len(indices)]
        torch.index_select(pixels, 0, indices, out=buffer)
        on_device = buffer.to(device, non_blocking=True)
        copied[k % 2] = torch.cuda.Event()
        copied[k % 2].record()
        if ready is not None:
            yield normalize_pixels(ready)
        ready = on_device
    if ready is not None:
        yield normalize_pixels(ready)


def normalize_pixels(pixels):
    """uint8 pixels to the model's input: the arithmetic of the tutorial's ToTensor
    (x / 255) and Normalize(0.5, 0.5) ((x - 0.5) / 0.5), done in place, on the device;
    the results are bit-identical."""
    return pixels.to(torch.float32).div_(255).sub_(0.5).div_(0.5)


def to_rgb(images):
    """Inception takes three channels: a grayscale image is repeated."""
    return images.expand(*images.shape[:-3], 3, *images.shape[-2:]) if images.shape[-3] == 1 else images
