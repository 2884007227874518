"""--download: CelebA from the Hugging Face Hub, verified, resumable, safe to interrupt."""
import errno
import glob
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import torchvision.datasets as dset
from tqdm import tqdm

from .errors import UserError, first_line, reason
from .files import size_text, writable_folder


CELEBA_ZIP = "img_align_celeba.zip"
CELEBA_ZIP_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"  # the official file's, as torchvision lists it
# Hub dataset repos that hold the official img_align_celeba.zip, tried in order
HUB_COPIES = ("AlexWortega/celeb",)
MANUAL_ROUTES = ("get img_align_celeba.zip by hand from the official site "
                 "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html), Kaggle "
                 "(kaggle.com/datasets/jessicali9530/celeba-dataset) or the Hub "
                 f"(huggingface.co/datasets/{HUB_COPIES[0]})")


class CopyRefused(Exception):
    """One copy of CelebA cannot be used (missing, gated, unverified): try the next."""


class NoNetwork(Exception):
    """The Hub cannot be reached at all (offline mode, no route, a firewall)."""


def download_celeba(dataroot, source=None):
    """--download: leaves DATAROOT/img_align_celeba/ complete, as if the official zip had
    been unzipped there by hand. Tries `source` (--download-from REPO[@REVISION]) or the
    built-in Hub copies in order, then torchvision's Google Drive route. An existing
    folder needs no network; a download resumes where the last one stopped; the folder
    appears only whole and verified."""
    target = os.path.join(dataroot, "img_align_celeba")
    if os.path.isdir(target):
        return
    for stale in glob.glob(os.path.join(glob.escape(dataroot), ".unpacking-*")):  # a killed unpack's
        shutil.rmtree(stale, ignore_errors=True)
    copies = [source] if source else list(HUB_COPIES)
    failures = []
    for k, copy_id in enumerate(copies):
        try:
            zip_path = fetch_celeba_zip(copy_id, dataroot, official=source is None)
            unpack_celeba(zip_path, dataroot)
            os.unlink(zip_path)  # 1.4 GB: the folder is what training reads
            return
        except CopyRefused as error:
            more = "; trying the next copy" if k + 1 < len(copies) else ""
            print(f"--download: {copy_id}: {error}{more}", file=sys.stderr)
            failures.append(copy_id)
        except NoNetwork as error:
            raise UserError(f"--download: {error}; {MANUAL_ROUTES}, and unzip it into "
                            f"{dataroot} (or copy a Hub cache from a machine with network)") from None
    if source is None:
        download_from_google_drive(dataroot)
        return
    raise UserError(f"--download: no copy of CelebA could be used ({', '.join(failures)}); "
                    f"{MANUAL_ROUTES}, and unzip it into {dataroot}")


def fetch_celeba_zip(copy_id, dataroot, official=True):
    """The copy's img_align_celeba.zip in dataroot, downloaded by the Hub client (which
    honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE, shows size, speed and time left,
    and retries a dropped connection) into a .part file that a later run resumes. Built-in
    copies must have the official MD5; a --download-from copy may differ, with a note."""
    from huggingface_hub import constants, errors, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    import httpx2  # the Hub client's HTTP library: its errors say "no network"

    repo, _, revision = copy_id.partition("@")
    zip_path = os.path.join(dataroot, CELEBA_ZIP)
    if os.path.isfile(zip_path):  # a finished, verified download that was not unpacked
        return zip_path
    url = hf_hub_url(repo, CELEBA_ZIP, repo_type="dataset", revision=revision or None,
                     endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        meta = get_hf_file_metadata(url)
    except errors.OfflineModeIsEnabled:
        raise NoNetwork("HF_HUB_OFFLINE is set, and CelebA is not here yet") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise NoNetwork(f"cannot reach {url.split('/datasets/')[0]} ({error})") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
            errors.EntryNotFoundError) as error:
        raise CopyRefused(f"not found ({type(error).__name__})") from None
    except errors.GatedRepoError:
        raise CopyRefused("gated: it needs an accepted licence and HF_TOKEN") from None
    except errors.HfHubHTTPError as error:
        raise CopyRefused(f"the Hub refused ({first_line(error)})") from None
    if not meta.size:
        raise CopyRefused("the Hub gives no size for the file")
    writable_folder("--dataroot", dataroot)
    part = os.path.join(dataroot, f".{CELEBA_ZIP}.{(meta.etag or 'x')[:16]}.part")
    have = os.path.getsize(part) if os.path.exists(part) else 0
    check_room(dataroot, meta.size - have, meta.size)
    print(f"Downloading {CELEBA_ZIP} ({size_text(meta.size)}) from {repo}"
          + (f" at {revision}" if revision else "") + (f", resuming at {size_text(have)}" if have else ""))
    try:
        with open(part, "ab") as f:
            http_get(meta.location, f, resume_size=have, headers=build_hf_headers(),
                     expected_size=meta.size, displayed_filename=CELEBA_ZIP)
    except (httpx2.TransportError, OSError) as error:
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG):
            raise UserError(f"--download: the disk is full or the file too large ({reason(error)}) "
                            f"after {size_text(os.path.getsize(part))}: CelebA needs "
                            f"{size_text(meta.size)} for the zip and about as much for the "
                            f"folder in {dataroot}; free some space and run --download again") from None
        done = os.path.getsize(part) if os.path.exists(part) else 0
        raise UserError(f"--download: the connection broke after {size_text(done)} of "
                        f"{size_text(meta.size)} ({first_line(error)}); run --download "
                        "again to resume") from None
    digest = file_md5(part)
    if digest != CELEBA_ZIP_MD5:
        if official:
            os.unlink(part)
            raise CopyRefused(f"its MD5 {digest} is not the official {CELEBA_ZIP_MD5}")
        print(f"note: {copy_id}'s {CELEBA_ZIP} is not the official file (MD5 {digest}); "
              "using it as a copy of your own")
    os.replace(part, zip_path)
    return zip_path


def check_room(dataroot, zip_bytes, folder_bytes):
    """One line naming both sizes when the zip and the unpacked folder do not fit."""
    free = shutil.disk_usage(dataroot).free
    if zip_bytes + folder_bytes > free:
        raise UserError(f"--download: CelebA needs {size_text(zip_bytes)} more for the zip and "
                        f"{size_text(folder_bytes)} for the unpacked folder, and {dataroot} has "
                        f"{size_text(free)} free; free some space or choose another --dataroot")


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack_celeba(zip_path, dataroot):
    """Unzips img_align_celeba/ into a hidden folder beside it, checking each file (the
    zip's CRC, a JPEG's first bytes), then renames it into place: an interrupted unpack
    leaves nothing that looks complete, and the next run removes what it left."""
    import zipfile
    work = tempfile.mkdtemp(prefix=".unpacking-", dir=dataroot)
    try:
        try:
            archive = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile:
            os.unlink(zip_path)
            raise CopyRefused("the file is not a zip; removed it") from None
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            wrong = [m.filename for m in members if not (m.filename.startswith("img_align_celeba/")
                                                         and m.filename.lower().endswith(".jpg"))]
            if wrong or not members:
                raise CopyRefused(f"the zip does not hold img_align_celeba/*.jpg alone "
                                  f"({', '.join(wrong[:2]) or 'it is empty'}, ...)")
            check_room(dataroot, 0, sum(m.file_size for m in members))
            with tqdm(total=sum(m.file_size for m in members), desc="unpacking", unit="B",
                      unit_scale=True, leave=False, disable=None) as bar:
                for member in members:
                    data = archive.read(member)  # checks the CRC
                    if not data.startswith(b"\xff\xd8\xff"):
                        raise CopyRefused(f"{member.filename} is not a JPEG")
                    path = os.path.join(work, *member.filename.split("/"))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    try:
                        with open(path, "wb") as f:
                            f.write(data)
                    except OSError as error:
                        if error.errno not in (errno.ENOSPC, errno.EFBIG):
                            raise
                        raise UserError(f"--download: the disk is full or the file too large "
                                        f"({reason(error)}) while unpacking: the folder needs "
                                        f"{size_text(bar.total)} in {dataroot}; free some space "
                                        "and run --download again") from None
                    bar.update(member.file_size)
        os.rename(os.path.join(work, "img_align_celeba"), os.path.join(dataroot, "img_align_celeba"))
        print(f"Unpacked {len(members)} images into {os.path.join(dataroot, 'img_align_celeba')}; "
              f"removing {zip_path}")
    except zipfile.BadZipFile as error:
        os.unlink(zip_path)
        raise CopyRefused(f"the zip is damaged ({error}); removed it") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_from_google_drive(dataroot):
    """The last route: torchvision's CelebA downloader (Google Drive, through gdown), into
    a hidden folder beside dataroot, then renamed into place."""
    if importlib.util.find_spec("gdown") is None:  # torchvision needs it for Google Drive
        raise UserError("--download: no Hub copy could be used, and torchvision's Google "
                        "Drive route needs the gdown package (pip install gdown); "
                        f"{MANUAL_ROUTES}, and unzip it into {dataroot}")
    writable_folder("--dataroot", dataroot)
    work = tempfile.mkdtemp(prefix=".unpacking-", dir=dataroot)
    try:
        print("Downloading CelebA from Google Drive with torchvision (1.4 GB) ...")
        dset.CelebA(root=work, split="all", target_type=[], download=True)
        os.rename(os.path.join(work, "celeba", "img_align_celeba"),
                  os.path.join(dataroot, "img_align_celeba"))
    except Exception as error:  # any failure of the mirror ends in the manual route
        raise UserError(f"--download: Google Drive failed too ({first_line(error)}): it often refuses "
                        f"(quota); {MANUAL_ROUTES}, and unzip it into {dataroot}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_for_download(dataroot, proc):
    """Under torchrun: rank 0 downloads while the others wait for the folder, polling the
    disk rather than a collective, whose timeout a long download would outlast."""
    if proc.writes or os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        return
    print(f"rank {proc.rank}: waiting for rank 0 to download CelebA into {dataroot}",
          file=sys.stderr, flush=True)
    while not os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        time.sleep(5)
