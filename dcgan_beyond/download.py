"""--download: CelebA's img_align_celeba.zip from sources whose checksum is known before a
byte is fetched, verified while it arrives, resumable, safe to interrupt; then unpacked."""
import errno
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import time

import torchvision.datasets as dset
from tqdm import tqdm

from .errors import UserError, first_line, reason
from .files import size_text, writable_folder


CELEBA_ZIP = "img_align_celeba.zip"
# The official file: torchvision lists this SHA-256 and size for it, and PyTorch's tutorials
# build checks the same digest for its copy of the DCGAN tutorial's data.
CELEBA_ZIP_SHA256 = "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74"
CELEBA_ZIP_BYTES = 1_443_490_838
# The built-in sources, tried in order: the tutorial's own asset over HTTPS, then Hub copies
# (taken only when the Hub announces the official SHA-256 as the file's linked ETag)
TUTORIAL_ASSET = "https://s3.amazonaws.com/pytorch-tutorial-assets/img_align_celeba.zip"
HUB_COPIES = ("spaces/haihuynh/face-img-retrieval", "datasets/AlexWortega/celeb")
MANUAL_ROUTES = (f"get {CELEBA_ZIP} by hand from {TUTORIAL_ASSET}, the official site "
                 "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html) or Kaggle "
                 "(kaggle.com/datasets/jessicali9530/celeba-dataset)")


class CopyRefused(Exception):
    """One source of CelebA cannot be used (missing, gated, not the official file): try the
    next."""


class Unreachable(CopyRefused):
    """One source cannot be reached (no route, no name, a proxy that refuses)."""


class NoNetwork(Exception):
    """No source may be tried: HF_HUB_OFFLINE is set."""


def download_celeba(dataroot, source=None):
    """--download: leaves DATAROOT/img_align_celeba/ complete, as if the official zip had
    been unzipped there by hand. A zip already in DATAROOT is checked and unpacked with no
    network. Else tries `source` (--download-from: an https:// or http:// URL, or a Hub repo
    [datasets/|spaces/]OWNER/NAME[@REVISION]) or the built-in sources in order, then
    torchvision's Google Drive route. A download resumes where the last one stopped; the
    folder appears only whole and verified."""
    target = os.path.join(dataroot, "img_align_celeba")
    if os.path.isdir(target):
        return
    for stale in glob.glob(os.path.join(glob.escape(dataroot), ".unpacking-*")):  # a killed unpack's
        shutil.rmtree(stale, ignore_errors=True)
    zip_path = os.path.join(dataroot, CELEBA_ZIP)
    if os.path.isfile(zip_path):
        check_local_zip(zip_path)
        return unpack_and_remove(zip_path, dataroot)
    if offline():
        raise UserError(f"--download: HF_HUB_OFFLINE is set, and CelebA is not here yet; "
                        f"{MANUAL_ROUTES}, and unzip it into {dataroot}")
    sources = [source] if source else [TUTORIAL_ASSET, *HUB_COPIES]
    failures, unreachable = [], []
    for k, name in enumerate(sources):
        try:
            fetch_celeba_zip(name, dataroot, official=source is None)
            return unpack_and_remove(zip_path, dataroot)
        except CopyRefused as error:
            more = "; trying the next source" if k + 1 < len(sources) else ""
            print(f"--download: {name}: {error}{more}", file=sys.stderr)
            failures.append(name)
            if isinstance(error, Unreachable):
                unreachable.append(error)
    if len(unreachable) == len(sources):
        raise UserError(f"--download: no source could be reached ({unreachable[0]}); "
                        f"{MANUAL_ROUTES}, and unzip it into {dataroot}")
    if source is None:
        return download_from_google_drive(dataroot)
    raise UserError(f"--download: {source} could not be used; {MANUAL_ROUTES}, and unzip it "
                    f"into {dataroot}")


def offline():
    """HF_HUB_OFFLINE, as the Hub client reads it: then no source is tried."""
    from huggingface_hub import constants
    return constants.HF_HUB_OFFLINE


def unpack_and_remove(zip_path, dataroot):
    unpack_celeba(zip_path, dataroot)
    os.unlink(zip_path)  # 1.4 GB: the folder is what training reads


def check_local_zip(zip_path):
    """A zip found in DATAROOT (put there by hand, or verified by a download whose unpack was
    cut): its SHA-256, read once; not the official file is used with a note, after the
    unpack's check of its layout."""
    digest = hashlib.sha256()
    with open(zip_path, "rb") as f, tqdm(total=os.path.getsize(zip_path), desc="checking",
                                         unit="B", unit_scale=True, leave=False, disable=None) as bar:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            bar.update(len(block))
    if digest.hexdigest() != CELEBA_ZIP_SHA256:
        print(f"note: {zip_path} is not the official file (SHA-256 {digest.hexdigest()}); "
              "using it as a copy of your own")


def parse_source(name):
    """(url, kind, label) of a source: kind "http" for a URL, else "hub" with the Hub's
    resolve URL of the repo's img_align_celeba.zip (a dataset unless it says spaces/)."""
    if re.match(r"^https?://", name):
        return name, "http", name
    from huggingface_hub import constants, hf_hub_url
    repo, _, revision = name.partition("@")
    kind, _, rest = repo.partition("/")
    repo_type, repo_id = ({"datasets": "dataset", "spaces": "space"}[kind], rest) \
        if kind in ("datasets", "spaces") and rest.count("/") == 1 else ("dataset", repo)
    url = hf_hub_url(repo_id, CELEBA_ZIP, repo_type=repo_type, revision=revision or None,
                     endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    return url, "hub", name


def announced(url, kind):
    """(size, SHA-256 or None) of the file as the source announces it before any byte:
    the Hub's linked ETag is the SHA-256 of a file stored with Git LFS; a plain server
    announces only its size. Raises CopyRefused or Unreachable."""
    import httpx2  # the Hub client's HTTP library
    from huggingface_hub import errors, get_hf_file_metadata
    from huggingface_hub.utils import get_session, hf_raise_for_status
    try:
        if kind == "hub":
            meta = get_hf_file_metadata(url)
            size, etag = meta.size, meta.etag
            sha256 = etag if etag and re.fullmatch(r"[0-9a-f]{64}", etag) else None
        else:  # a plain server gets no Hub token
            response = get_session().head(url, headers={"Accept-Encoding": "identity"},
                                          follow_redirects=True)
            hf_raise_for_status(response)
            size, sha256 = int(response.headers.get("Content-Length") or 0), None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise Unreachable(f"cannot reach it ({first_line(error)})") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
            errors.EntryNotFoundError) as error:
        raise CopyRefused(f"not found ({type(error).__name__})") from None
    except errors.GatedRepoError:
        raise CopyRefused("gated: it needs an accepted licence and HF_TOKEN") from None
    except errors.HfHubHTTPError as error:
        raise CopyRefused(f"the server refused ({first_line(error)})") from None
    if not size:
        raise CopyRefused("the server gives no size for the file")
    return size, sha256


class HashingFile:
    """The .part file, open for appending, that hashes (SHA-256) every byte written to it,
    so that no second pass over 1.4 GB is needed. What is already on disk is hashed once, at
    the start; if the client truncates (a server that ignored Range), the hash restarts
    from what is kept."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()
        self._rehash(os.fstat(f.fileno()).st_size)

    def _rehash(self, size):
        self.sha256 = hashlib.sha256()
        with open(self.f.name, "rb") as kept:
            while size > 0:
                block = kept.read(min(1 << 20, size))
                if not block:
                    break
                self.sha256.update(block)
                size -= len(block)

    def write(self, data):
        self.sha256.update(data)
        return self.f.write(data)

    def truncate(self, size=None):
        size = self.f.tell() if size is None else size
        result = self.f.truncate(size)
        self.f.flush()
        self._rehash(size)
        return result

    def __getattr__(self, name):  # tell, seek, flush, fileno: the file's own
        return getattr(self.f, name)


def fetch_celeba_zip(name, dataroot, official=True):
    """The source's img_align_celeba.zip into DATAROOT, renamed into place only once its
    SHA-256 is the official one (a --download-from source of your own may differ, with a
    note). Bytes whose SHA-256 differs from the one the source announced are refused on
    every route. The Hub client's downloader fetches it (the same progress bar, retries and
    Range resume on both kinds of source) into a .part file that a later run resumes.
    A built-in source that announces another size or SHA-256 is refused before its body
    is asked for."""
    import httpx2
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    url, kind, label = parse_source(name)
    size, sha256 = announced(url, kind)
    if official and (size != CELEBA_ZIP_BYTES or (sha256 and sha256 != CELEBA_ZIP_SHA256)):
        what = (f"SHA-256 {sha256}" if sha256 and sha256 != CELEBA_ZIP_SHA256
                else f"size {size:,} bytes")
        raise CopyRefused(f"it announces {what}, not the official file's; not downloaded")
    if kind == "http" and url.startswith("http://"):
        print(f"note: {url} is plain HTTP: nothing protects the bytes on the way; the "
              "SHA-256 below is the only check")
    writable_folder("--dataroot", dataroot)
    # the same source announcing the same file resumes; anything else starts afresh
    key = hashlib.sha256(f"{url} {size} {sha256}".encode()).hexdigest()[:16]
    part = os.path.join(dataroot, f".{CELEBA_ZIP}.{key}.part")
    have = os.path.getsize(part) if os.path.exists(part) else 0
    check_room(dataroot, size - have, size)
    print(f"Downloading {CELEBA_ZIP} ({size_text(size)}) from {label}"
          + (f", resuming at {size_text(have)}" if have else ""))
    try:
        with open(part, "ab") as f:
            hashing = HashingFile(f)
            http_get(url, hashing, resume_size=have, expected_size=size, displayed_filename=CELEBA_ZIP,
                     headers=build_hf_headers() if kind == "hub" else {})
    except (httpx2.TransportError, OSError) as error:
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG):
            raise UserError(f"--download: the disk is full or the file too large ({reason(error)}) "
                            f"after {size_text(os.path.getsize(part))}: CelebA needs "
                            f"{size_text(size)} for the zip and about as much for the "
                            f"folder in {dataroot}; free some space and run --download again") from None
        done = os.path.getsize(part) if os.path.exists(part) else 0
        raise UserError(f"--download: the connection broke after {size_text(done)} of "
                        f"{size_text(size)} ({first_line(error)}); run --download "
                        "again to resume") from None
    digest = hashing.sha256.hexdigest()
    if sha256 and digest != sha256:  # the source broke its own promise, whoever chose it
        os.unlink(part)
        problem = (f"it announced SHA-256 {sha256} and sent bytes whose SHA-256 is {digest}: "
                   "corrupt or tampered with; removed them")
        if official:
            raise CopyRefused(problem)
        raise UserError(f"--download-from {label}: {problem}, and unpacked nothing; try again "
                        "later, or another source (data/README.md)")
    if digest != CELEBA_ZIP_SHA256:
        if official:
            os.unlink(part)
            raise CopyRefused(f"its SHA-256 {digest} is not the official {CELEBA_ZIP_SHA256}; "
                              "removed it")
        checked = ("its SHA-256 is the one the source announced" if sha256 else
                   "the source announces no SHA-256: nothing but the size was checked")
        print(f"note: {label}'s {CELEBA_ZIP} is not the official file (SHA-256 {digest}); "
              f"using it as a copy of your own ({checked})")
    os.replace(part, os.path.join(dataroot, CELEBA_ZIP))


def check_room(dataroot, zip_bytes, folder_bytes):
    """One line naming both sizes when the zip and the unpacked folder do not fit."""
    free = shutil.disk_usage(dataroot).free
    if zip_bytes + folder_bytes > free:
        raise UserError(f"--download: CelebA needs {size_text(zip_bytes)} more for the zip and "
                        f"{size_text(folder_bytes)} for the unpacked folder, and {dataroot} has "
                        f"{size_text(free)} free; free some space or choose another --dataroot")


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
        raise UserError("--download: no source could be used, and torchvision's Google "
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


def wait_for_download(dataroot, process):
    """Under torchrun: rank 0 downloads while the others wait for the folder, polling the
    disk rather than a collective, whose timeout a long download would outlast."""
    if process.writes or os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        return
    print(f"rank {process.rank}: waiting for rank 0 to download CelebA into {dataroot}",
          file=sys.stderr, flush=True)
    while not os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        time.sleep(1)  # a stat a second: nothing beside a download that takes minutes
