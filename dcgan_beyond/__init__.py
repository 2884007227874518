"""What a long training run needs beyond the tutorial, beside dcgan.py: one module per
concern. dcgan.py is the tutorial, whole; each extra appears in it as one call that names
its module (`checkpoints.save_checkpoint(...)`, `health.HealthMonitor(...)`).

The modules, each building only on those before it (no cycle, and none imports dcgan):

    errors        UserError: a problem the user can fix, said in one line
    files         atomic writes, locks, CSV, PNG grids
    devices       the device, torchrun's process group, wrappers for speed and scale
    stopping      stop signals and divergence
    data          the dataset's checks, the decode-once cache, its batches
    download      --download: CelebA, verified and resumable
    ema           --ema
    better_faces  --diffaug, --loss hinge, --spectral-norm, --lr-d/--lr-g
    checkpoints   the checkpoint dict, exact resume, generators from saved weights
    metrics       metrics.csv, TensorBoard, SWD
    fidelity      FID and KID (torch-fidelity), the evaluators
    health        the health monitor
    run           inputs checked before the first write, the outdir held, the extras
    sampling      the generate and evaluate commands
    cli           the parsers, the settings resolved once, the entry point

What a module needs of dcgan.py's part I (the model classes, the inputs, make_dataset,
the figure helpers) is passed in as an argument; optional libraries (torch-fidelity,
huggingface_hub, TensorBoard) are imported by the function that uses them.

The growth rule: a new feature is one new module here, at most one hook in dcgan.py's
part I, and its own group of flags (one add_*_flags function in cli).
"""
