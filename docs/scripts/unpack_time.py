"""The time --download takes to check and unpack a zip of CelebA's size: 202,599 JPEGs
(the files of DATAROOT/img_align_celeba, repeated) stored as the official zip stores them,
unpacked by the program's own unpack step (CRC and JPEG check of every file, then the
rename into place).

    python -m docs.scripts.unpack_time data/celeba-8k [COUNT]
"""
import os
import sys
import tempfile
import time
import zipfile

from dcgan_beyond import download


def main(dataroot, count=202_599):
    source = os.path.join(dataroot, "img_align_celeba")
    names = sorted(os.listdir(source))
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        zip_path = os.path.join(tmp, download.CELEBA_ZIP)
        start = time.perf_counter()
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
            for k in range(count):
                archive.write(os.path.join(source, names[k % len(names)]),
                              f"img_align_celeba/{k + 1:06d}.jpg")
        print(f"made a zip of {count:,} JPEGs, {os.path.getsize(zip_path) / 2**30:.2f} GiB, "
              f"in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        download.unpack_celeba(zip_path, tmp)
        seconds = time.perf_counter() - start
        unpacked = len(os.listdir(os.path.join(tmp, "img_align_celeba")))
        print(f"unpacked {unpacked:,} files in {seconds:.0f} s ({unpacked / seconds:,.0f} files/s)")


if __name__ == "__main__":
    main(sys.argv[1], *(int(v) for v in sys.argv[2:3]))
