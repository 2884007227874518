"""Sharing a trained generator on the Hugging Face Hub: `dcgan.py push` and --push-to-hub
upload config.json, model.safetensors, a model card, a sample grid and the loss curve in
one commit; generate and evaluate read a generator from hf://OWNER/NAME[@REVISION].
huggingface_hub and safetensors are imported only here, when these run."""
import json
import os
import tempfile

import torch
import torchvision.utils as vutils

from .checkpoints import CHECKPOINT_FORMAT, generator_from_weights, load_checkpoint
from .ema import sampling_weights
from .errors import UserError, first_line
from .files import save_grid, size_text
from .metrics import generated_uint8
from .time_limit import duration_text

HUB_PREFIX = "hf://"
GENERATOR_ARGS = ("nz", "ngf", "nc", "image_size")  # config.json: exactly the Generator's
SAMPLES_SEED = 999  # samples.png: 64 faces from this seed (generate's default)
TOKEN_HELP = "set HF_TOKEN, or run `hf auth login` (a token is never a flag)"


def hub_place():
    """(endpoint, cache folder) as HF_ENDPOINT, HF_HUB_CACHE and HF_HOME say now (the Hub
    client reads them once, when it is first imported)."""
    from huggingface_hub import constants
    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(home, "hub") if home else None)
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT, cache or constants.HF_HUB_CACHE


def is_hub_path(path):
    return path.startswith(HUB_PREFIX)


def parse_hub_path(path, flag="--checkpoint"):
    """(repo_id, revision or None) of hf://OWNER/NAME[@REVISION]."""
    repo_id, _, revision = path[len(HUB_PREFIX):].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"{flag} {path}: not a Hub model; write hf://OWNER/NAME, or "
                        "hf://OWNER/NAME@REVISION for a branch, tag or commit")
    return repo_id, revision or None


def download(path, name):
    """The local path of the file `name` of the model hf://... `path`, fetched and cached by
    the Hub client; its errors become one line each."""
    import httpx2  # the Hub client's HTTP library
    from huggingface_hub import errors, hf_hub_download
    repo_id, revision = parse_hub_path(path)
    endpoint, cache = hub_place()
    try:
        return hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint, cache_dir=cache)
    except errors.RevisionNotFoundError:
        raise UserError(f"--checkpoint {path}: the repo has no such revision; give a branch, tag "
                        "or commit it has, or drop @REVISION") from None
    except errors.RepositoryNotFoundError:
        raise UserError(f"--checkpoint {path}: no such model repo on the Hub, or a private one "
                        f"this machine has no token for ({TOKEN_HELP})") from None
    except errors.LocalEntryNotFoundError as error:  # before EntryNotFoundError: a subclass
        raise UserError(f"--checkpoint {path}: the Hub cannot be reached and the files are not "
                        f"in the local cache ({first_line(error)[:80]}); connect once, after "
                        "which HF_HUB_OFFLINE=1 works") from None
    except errors.EntryNotFoundError:
        raise UserError(f"--checkpoint {path}: the repo has no {name}: it holds no generator "
                        "pushed by dcgan.py push (config.json and model.safetensors)") from None
    except errors.HfHubHTTPError as error:
        raise UserError(f"--checkpoint {path}: the Hub refused ({first_line(error)[:120]})") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise UserError(f"--checkpoint {path}: the connection to the Hub broke "
                        f"({first_line(error)}); run again") from None


def generator_from_hub(path, device, Generator):
    """(G, its config.json) from hf://OWNER/NAME[@REVISION]: the two files, fetched (and
    cached) by the Hub client, the Generator built from config.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    config_file, weights_file = (download(path, name) for name in ("config.json", "model.safetensors"))
    try:
        with open(config_file) as f:
            config = json.load(f)
        config = {key: int(config[key]) for key in GENERATOR_ARGS}
        weights = load_file(weights_file)
    except (ValueError, KeyError, TypeError, SafetensorError) as error:
        raise UserError(f"--checkpoint {path}: config.json or model.safetensors cannot be read "
                        f"({first_line(error)[:100]})") from None
    return generator_from_weights(weights, path, Generator, config).to(device), config


# ----------------------------------------------------------------------------------------
# push
# ----------------------------------------------------------------------------------------

def check_token():
    """Before anything is trained or built: the token that a push needs, as the Hub client
    finds it (HF_TOKEN, `hf auth login`); never printed."""
    from huggingface_hub import get_token
    if not get_token():
        raise UserError(f"pushing to the Hub needs a token with write access: {TOKEN_HELP}")


def push(checkpoint_path, repo_id, Generator, private=None, revision=None, message=None):
    """Uploads the sampling generator of checkpoint.pt (its EMA one if it has one) or of a
    netG.pt, with its card, samples.png and the loss curve beside it, to the model repo
    repo_id in one commit: every file or none. Says first what it sends."""
    check_token()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo-id {repo_id}: write OWNER/NAME (your user or organization "
                        "name, then the model's)")
    checkpoint = load_checkpoint(checkpoint_path)
    whole = checkpoint.get("format") == CHECKPOINT_FORMAT
    run_config = checkpoint.get("config", {}) if whole else {}
    weights = sampling_weights(checkpoint) if whole else checkpoint
    netG = generator_from_weights(weights, checkpoint_path, Generator, run_config)
    config = {"nz": netG.nz, "ngf": netG.ngf, "nc": netG.nc, "image_size": netG.image_size}
    loss_curve = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "loss_curve.png")
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(folder, netG, config, checkpoint if whole else None, repo_id,
                            loss_curve if os.path.isfile(loss_curve) else None)
        print(f"Pushing to {repo_id}{f' (branch {revision})' if revision else ''}"
              f"{', private' if private else ''}, one commit: "
              + ", ".join(f"{name} {size_text(os.path.getsize(path))}" for name, path in files))
        url = upload(repo_id, files, private, revision,
                     message or f"Upload a DCGAN generator ({os.path.basename(checkpoint_path)})")
    print(f"Pushed: {url}; sample it with: python dcgan.py generate --checkpoint hf://{repo_id}"
          + (f"@{revision}" if revision else ""))
    return 0


def write_files(folder, netG, config, checkpoint, repo_id, loss_curve):
    """[(name in the repo, local path)]: config.json, model.safetensors (the tutorial's
    layer names), README.md (the card), samples.png and the loss curve if there is one."""
    from safetensors.torch import save_file
    path = os.path.join
    with open(path(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    state = {k: v.detach().cpu().contiguous() for k, v in netG.state_dict().items()}
    save_file(state, path(folder, "model.safetensors"), metadata={"format": "pt"})
    noise = torch.randn(64, netG.nz, 1, 1, generator=torch.Generator().manual_seed(SAMPLES_SEED))
    save_grid(vutils.make_grid(generated_uint8(netG, noise), nrow=8, padding=2),
              path(folder, "samples.png"))
    with open(path(folder, "README.md"), "w") as f:
        f.write(model_card(repo_id, config, checkpoint, loss_curve is not None))
    files = [(name, path(folder, name)) for name in
             ("config.json", "model.safetensors", "README.md", "samples.png")]
    return files + ([("loss_curve.png", loss_curve)] if loss_curve else [])


def upload(repo_id, files, private, revision, message):
    """create_repo (if missing) and one create_commit of every file; returns its URL."""
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi, errors
    api = HfApi(endpoint=hub_place()[0])
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, [CommitOperationAdd(name, local) for name, local in files],
                                 commit_message=message, revision=revision)
    except errors.RevisionNotFoundError:
        raise UserError(f"--revision {revision}: {repo_id} has no such branch; create it on "
                        "the Hub first, or drop --revision") from None
    except errors.HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise UserError(f"the Hub refused to let this token write to {repo_id} ({status}): "
                            "push to a repo of your own user or organization, or use a token "
                            f"with write access ({TOKEN_HELP}); nothing was committed") from None
        raise UserError(f"the Hub refused the push to {repo_id} ({first_line(error)[:120]}); "
                        "nothing was committed") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise UserError(f"the connection to the Hub broke ({first_line(error)}); nothing was "
                        "committed (the files go up in one commit or not at all): push again") from None
    return info.commit_url


def model_card(repo_id, config, checkpoint, has_loss_curve):
    """README.md of the model repo: YAML metadata, then what it is, how to sample it, how it
    was trained and measured, and the data's terms."""
    run = (checkpoint or {}).get("config", {})
    celeba = os.path.isdir(os.path.join(run.get("dataroot", ""), "img_align_celeba"))
    lines = ["---", "library_name: pytorch", "tags:", "- dcgan", "- gan", "- pytorch",
             "- unconditional-image-generation", "pipeline_tag: unconditional-image-generation"]
    lines += ["datasets:", "- celeba"] if celeba else []
    lines += ["license: other", "license_name: celeba-non-commercial-research",
              "license_link: https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html", "---", ""]
    size = config["image_size"]
    lines += [f"# DCGAN generator: {repo_id}", "",
              f"The generator of the PyTorch \"DCGAN faces\" tutorial ({size}x{size} px, "
              f"{config['nc']} channels, a latent vector of {config['nz']}), trained with "
              "dcgan.py, a training program that reproduces the "
              "[tutorial](https://pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html). "
              "Its input is noise of shape `(N, nz, 1, 1)`; its output images are in [-1, 1].", "", "![64 samples](samples.png)", "",
              f"*64 samples from seed {SAMPLES_SEED}.*", "", "## Sample it", "",
              "With this program:", "", "```bash",
              f"python dcgan.py generate --checkpoint hf://{repo_id} --num-samples 64", "```", "",
              "In plain PyTorch:", "", "```python", *plain_pytorch(repo_id, config), "```", ""]
    lines += training_section(checkpoint, has_loss_curve)
    lines += ["## Training data and terms", "",
              "The weights were learned from the images named above. CelebA is available for "
              "non-commercial research purposes only (see its "
              "[agreement](https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html)); a model trained "
              "on it inherits those terms. The program's code is BSD-3-Clause.", ""]
    return "\n".join(lines)


def plain_pytorch(repo_id, config):
    """About ten lines that rebuild and sample the generator with torch, huggingface_hub and
    safetensors alone (the layers written out for this image size)."""
    layers = ["nn.ConvTranspose2d(nz, ngf * {m}, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * {m}), nn.ReLU(True),"
              .format(m=config["image_size"] // 8)]
    mult = config["image_size"] // 8
    while mult > 1:
        layers.append(f"nn.ConvTranspose2d(ngf * {mult}, ngf * {mult // 2}, 4, 2, 1, bias=False), "
                      f"nn.BatchNorm2d(ngf * {mult // 2}), nn.ReLU(True),")
        mult //= 2
    layers.append("nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())")
    return ["import json, torch, torch.nn as nn",
            "from huggingface_hub import hf_hub_download",
            "from safetensors.torch import load_file", "",
            f'config = json.load(open(hf_hub_download("{repo_id}", "config.json")))',
            'nz, ngf, nc = config["nz"], config["ngf"], config["nc"]',
            "netG = nn.Module()",
            "netG.main = nn.Sequential(",
            *[f"    {layer}" for layer in layers],
            f'netG.load_state_dict(load_file(hf_hub_download("{repo_id}", "model.safetensors")))',
            "noise = torch.randn(16, nz, 1, 1, generator=torch.Generator().manual_seed(0))",
            "with torch.no_grad():",
            "    images = netG.eval().main(noise)  # (16, nc, H, W) in [-1, 1]"]


def training_section(checkpoint, has_loss_curve):
    """The card's training configuration, iterations, time and measurements."""
    if checkpoint is None:
        return ["## Training", "", "Pushed from bare generator weights (netG.pt): the run's "
                "configuration and measurements were not kept with them.", ""]
    # the data folder's name only: a card is public, the machine's paths are not its business
    run = dict(checkpoint["config"], dataroot=os.path.basename(os.path.normpath(
        checkpoint["config"].get("dataroot", ""))))
    keys = ("dataroot", "num_epochs", "batch_size", "lr", "lr_d", "lr_g", "beta1", "loss",
            "ema", "diffaug", "spectral_norm", "amp", "channels_last", "compile", "seed")
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {run[key]} |" for key in keys if run.get(key) is not None]
    lines += ["", f"{checkpoint['iteration']:,} iterations ({checkpoint['epoch']} whole epochs of "
              f"{checkpoint['batches_per_epoch']} batches) in "
              f"{duration_text(checkpoint.get('elapsed', 0))} of training, on "
              f"{checkpoint['world_size']} process(es); the generator above is "
              f"{'the EMA of G' if checkpoint.get('ema') else 'G'}.", ""]
    if has_loss_curve:
        lines += ["![Losses during training](loss_curve.png)", ""]
    evals = checkpoint.get("evals") or []
    if evals:
        last = evals[-1]
        samples = run.get("eval_samples")
        lines += ["## Measurements", "",
                  f"At iteration {last['iteration']}, against "
                  f"{'held-out images' if run.get('eval_dataroot') else 'training images'}, "
                  "each beside its real-vs-real floor:", "", "| metric | value | floor | settings |",
                  "| --- | ---: | ---: | --- |"]
        if "swd_avg" in last:
            lines.append(f"| SWD x1e3 | {last['swd_avg']:.2f} | {last['floor_avg']:.2f} | "
                         f"{samples or 2000} generated vs as many real images, seed {run.get('seed')} |")
        for key in ("fid", "kid"):
            if key in last:
                lines.append(f"| {key.upper()} | {last[key]:.4g} | {last['floor_' + key]:.4g} | "
                             f"{samples or 50000} generated vs {samples or 'all'} real images, "
                             "torch-fidelity's Inception (pt_inception-2015-12-05) |")
        lines.append("")
    return lines
