"""FID and KID, the field's yardstick, computed by torch-fidelity (imported only when
asked for), and the evaluators that --eval-metrics names."""
import hashlib
import json
import os
import pickle

import torch

from .data import cache_folder, cache_path, load_pixel_cache, real_uint8, to_rgb
from .errors import UserError, reason
from .files import atomic_write
from .metrics import EvalSettings, SWDEvaluator, generated_uint8, write_eval_csv


FID_SAMPLES = 50_000  # generated images in the usual protocol, against all real images
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's Inception
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class GeneratorImages(torch.nn.Module):
    """G as torch-fidelity samples it (wrapped by generator_input): z from its seeded
    normal noise, uint8 images out, straight from G in batches (no files)."""

    def __init__(self, netG):
        super().__init__()
        self.netG = netG

    def forward(self, z):
        return to_rgb(generated_uint8(self.netG, z.view(len(z), -1, 1, 1), len(z)).to(z.device))


def generator_input(netG):
    """G as a torch-fidelity input. make_eval=False: generated_uint8 sets G's mode itself
    and gives it back, so training goes on in the mode it was in."""
    import torch_fidelity
    return torch_fidelity.GenerativeModelModuleWrapper(GeneratorImages(netG), netG.nz, "normal", 0,
                                                       make_eval=False)


class PixelImages(torch.utils.data.Dataset):
    """uint8 images (the decode-once cache's rows) as torch-fidelity reads them."""

    def __init__(self, pixels):
        self.pixels = pixels

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        return to_rgb(self.pixels[index])


def inception_weights(path):
    """The Inception weights to hand torch-fidelity: --fid-weights, or the copy in torch's
    hub cache (downloaded there once). Loaded with weights_only=True first: a file that
    would run code is refused, never run. One line when they cannot be had."""
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    if not path and not os.path.isfile(cached):
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, cached, progress=False)
        except (OSError, ValueError) as error:  # URLError is an OSError
            raise UserError(f"FID and KID need torch-fidelity's Inception weights, {INCEPTION_FILE} "
                            f"(92 MB), which cannot be downloaded here ({reason(error)}); on a "
                            f"machine with network fetch {INCEPTION_URL} and give it with "
                            f"--fid-weights PATH, or put it in {os.path.dirname(cached)}") from None
    path = path or cached
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--fid-weights {path}: no such file; give the path of {INCEPTION_FILE}") from None
    except pickle.UnpicklingError:
        raise UserError(f"--fid-weights {path}: refused: the file holds Python objects that would "
                        f"run code when loaded; use torch-fidelity's {INCEPTION_FILE}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(f"--fid-weights {path}: not a PyTorch weights file ({reason(error)})") from None
    return path


def weights_digest(path, cache_root):
    """The first 16 hex digits of the weights file's SHA-256, read once and remembered in
    CACHE_ROOT/weights-digests.json by the file's path, size and modification time."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)} {st.st_size} {st.st_mtime_ns}"
    memo = os.path.join(cache_root, "weights-digests.json")
    try:
        with open(memo) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if key not in known:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        known[key] = digest.hexdigest()[:16]
        os.makedirs(cache_root, exist_ok=True)
        atomic_write(memo, lambda f: f.write(json.dumps(known, indent=1).encode()))
    return known[key]


class FidelityEvaluator:
    """FID and KID (torch-fidelity, standard Inception) of G's images against all real
    images (held-out, or training images) at the training size, beside the real-vs-real
    floor (two disjoint halves of them). The real images' statistics are cached beside the
    pixel cache, once per dataset, size and Inception weights. torch-fidelity draws from its own seeded
    generator: evaluation changes no training number."""

    def __init__(self, real, real_key, settings, device, log=print):
        self.metrics, self.device, self.log = settings.metrics, device, log
        self.seed, self.weights = settings.seed, inception_weights(settings.fid_weights)
        limit = settings.samples
        self.real = real[:limit] if limit else real
        self.generated = limit or FID_SAMPLES
        self.protocol = (f"{self.generated} generated vs {len(self.real)} real images, "
                         f"{real.shape[-1]} px")
        if limit:
            self.protocol += ("; not comparable with papers, which use 50,000 generated "
                              "images against all real ones")
        # the real images' statistics, cached beside the pixel cache: once per dataset, size
        # and weights (other weights must never meet statistics that these made)
        self.cache_root = os.path.join(cache_folder(settings.cache_dir), "fidelity")
        digest = weights_digest(self.weights, self.cache_root)
        self.real_name = f"dcgan-real-{real_key}-{len(self.real)}-inception-{digest}"
        self.floor = self._floor()
        log(f"FID/KID floor (real vs real, two halves of {len(self.real)} images): "
            f"{format_fidelity(self.floor)}")

    def _floor(self):
        """The real-vs-real floor (two halves of the real images), computed once per real
        set, weights, metrics and seed and then read from the cache: each FID is a square
        root of a 2048 x 2048 matrix, seconds on a CPU."""
        asked = "-".join(sorted({"fid", "kid"} & set(self.metrics)))
        path = os.path.join(self.cache_root, f"{self.real_name}-floor-{asked}-seed{self.seed}.json")
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
        floor = self._score(PixelImages(self.real[0::2]), PixelImages(self.real[1::2]),
                            input1_cache_name=f"{self.real_name}-even",
                            input2_cache_name=f"{self.real_name}-odd")
        os.makedirs(self.cache_root, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(floor).encode()))
        return floor

    def _score(self, input1, input2, **names):
        return fidelity_scores(input1, input2, self.metrics, self.weights, self.device,
                               self.seed, self.cache_root, **names)

    def measure(self, netG, iteration):
        """The eval.csv columns of G at this iteration: FID and KID, and their floors."""
        scores = self._score(generator_input(netG), PixelImages(self.real),
                             input1_model_num_samples=self.generated, input2_cache_name=self.real_name)
        self.log(f"[iteration {iteration}] {format_fidelity(scores)} ({self.protocol}; floor "
                 f"{format_fidelity(self.floor)})")
        row = {k: v for k, v in scores.items() if v is not None}
        row.update({f"floor_{k}": v for k, v in self.floor.items() if v is not None})
        return row


def fidelity_evaluator(images, pixels, held_out, settings, device, log=print):
    """A FidelityEvaluator against all real images, the held-out ones or else the training
    ones, from the decode-once cache (with --no-cache, decoded once for it)."""
    real_images = held_out if held_out is not None else images
    if held_out is None and pixels is not None:
        real = pixels
    elif settings.no_cache:
        real = real_uint8(real_images, None, list(range(len(real_images))), settings.workers)
    else:
        real = load_pixel_cache(real_images, settings.image_size, settings.nc, settings.cache_dir,
                                settings.workers)
    key = os.path.basename(cache_path(real_images, settings.image_size, settings.nc, ""))[:-len(".npy")]
    return FidelityEvaluator(real, key, settings, device, log)


def needs_inception(metrics):
    """Whether the metrics asked for (a comma-separated list or a tuple) need the
    Inception network: FID or KID."""
    names = metrics.split(",") if isinstance(metrics, str) else metrics
    return bool({"fid", "kid"} & set(names))


def fidelity_scores(input1, input2, metrics, weights, device, seed, cache_root, **names):
    """{"fid": ..., "kid": ...} (None where not asked) of two inputs, by torch-fidelity.
    torch's global random stream is left as it was (its DataLoader draws a seed from it)."""
    import torch_fidelity
    count = (len(input2) if isinstance(input1, torch_fidelity.GenerativeModelBase)
             else min(len(input1), len(input2)))
    count = min(count, names.get("input1_model_num_samples", count))
    with torch.random.fork_rng(devices=[]):
        result = torch_fidelity.calculate_metrics(
            input1=input1, input2=input2, fid="fid" in metrics, kid="kid" in metrics,
            kid_subset_size=min(1000, count), cuda=device.type == "cuda", rng_seed=seed,
            feature_extractor_weights_path=weights, save_cpu_ram=True, verbose=False,
            cache_root=cache_root, **names)
    return {"fid": result.get(torch_fidelity.KEY_METRIC_FID) if "fid" in metrics else None,
            "kid": result.get(torch_fidelity.KEY_METRIC_KID_MEAN) if "kid" in metrics else None}


def evaluators(images, pixels, held_out, settings, device, log=print):
    """The evaluators that the settings' metrics ask for, SWD first."""
    found = ([SWDEvaluator(images, pixels, held_out, settings, device, log)]
             if "swd" in settings.metrics else [])
    if needs_inception(settings.metrics):
        found.append(fidelity_evaluator(images, pixels, held_out, settings, device, log))
    return found


def measure_all(evaluators, netG, iteration):
    """One eval.csv row: every evaluator's columns for G at this iteration."""
    row = {"iteration": iteration}
    for evaluator in evaluators:
        row.update(evaluator.measure(netG, iteration))
    return row


def format_fidelity(scores):
    return ", ".join(f"{name.upper()} {value:.4g}" for name, value in scores.items() if value is not None)


class Evaluation:
    """--eval-every: the evaluators of --eval-metrics, run every this many iterations and at
    the end, each row into eval.csv (and TensorBoard). Rank 0 alone measures; without
    --eval-every, measure() does nothing."""

    def __init__(self, args, process, images, pixels, held_out, outputs, checkpoint=None):
        self.every, self.board, self.path = args.eval_every, outputs.board, outputs.path("eval.csv")
        self.rows = list(checkpoint["evals"]) if checkpoint else []  # a resumed run's go on
        self.evaluators = (evaluators(images, pixels, held_out, EvalSettings.of_training(args),
                                      process.device, process.log)
                           if args.eval_every and process.writes else [])
        if process.writes:
            write_eval_csv(self.path, self.rows)

    def measure(self, netG, iteration, last=False):
        if self.evaluators and (iteration % self.every == 0 or last):
            self.rows.append(measure_all(self.evaluators, netG, iteration))
            write_eval_csv(self.path, self.rows)
            self.board.scalars(self.rows[-1], ("swd_avg", "fid", "kid"))
