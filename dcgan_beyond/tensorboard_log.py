"""--tensorboard: the statistics, the grids, the evaluations and the health warnings, as
TensorBoard shows them (the tensorboard package is imported only when asked for)."""
from .errors import UserError


def summary_writer():
    """TensorBoard's SummaryWriter class, or one line that says how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install "
                        "tensorboard (or drop --tensorboard)") from None
    return SummaryWriter


class TensorBoardLog:
    """A SummaryWriter's log of the run; with writer None (no --tensorboard, or a rank
    that does not write) every call does nothing."""

    def __init__(self, writer):
        self.writer = writer

    def losses(self, rows):
        """metrics.csv rows: the losses and D's outputs."""
        for epoch, iteration, loss_d, loss_g, d_x, d_g_z1, d_g_z2, _ in rows if self.writer else ():
            self.writer.add_scalars("loss", {"D": loss_d, "G": loss_g}, iteration)
            self.writer.add_scalars("D_output", {"D(x)": d_x, "D(G(z)) before D step": d_g_z1,
                                                 "D(G(z)) after D step": d_g_z2}, iteration)

    def image(self, grid, iteration):
        if self.writer:
            self.writer.add_image("fixed_noise", grid, iteration)

    def scalars(self, row, keys):
        """An eval.csv row's measurements named in keys."""
        for key in keys:
            if self.writer and key in row:
                self.writer.add_scalar(key, row[key], row["iteration"])

    def text(self, message, iteration):
        if self.writer:
            self.writer.add_text("health", message, iteration)

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None
