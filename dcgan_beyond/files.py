"""Files: atomic writes, locks, CSV, sizes, writable folders, PNG grids."""
import contextlib
import csv
import io
import os
import tempfile

try:
    import fcntl  # file locks: POSIX only
except ImportError:
    fcntl = None

from PIL import Image

from .errors import UserError, reason


def atomic_write(path, write):
    """Writes a file through a temporary file, flush, fsync and rename, so that a crash at
    any moment leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                write(f)
            except RuntimeError:  # torch.save's failed writes hide their reason: ask the disk
                f.seek(0, os.SEEK_END)
                f.write(b"\0")
                f.flush()  # raises the OSError (disk full, file too large) if writes fail
                raise  # else it was no write that failed
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def take_lock(path, wait=True):
    """The file at path, open and exclusively locked until closed (or the process ends,
    however it ends); with wait=False, None at once if another process holds it. Without
    fcntl (Windows) the file holds no lock."""
    f = open(path, "a+")
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return None
    return f


def locks_supported():
    """Whether take_lock really locks (fcntl exists: POSIX)."""
    return fcntl is not None


def csv_text(rows):
    """Rows as CSV lines; numbers as Python writes them, so that they read back exactly."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def size_text(size):
    """A size in GiB, MiB (from 0.1 MiB), KiB, or bytes."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    if size >= 0.1 * 2**20:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**10:.1f} KiB" if size >= 2**10 else f"{size} B"


def writable_folder(flag, folder):
    """Creates the folder and proves it writable, or says in one line why not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({reason(error)}); "
                        "choose a writable folder") from None


def save_grid(grid, path):
    """A CHW uint8 image grid as a PNG file."""
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
