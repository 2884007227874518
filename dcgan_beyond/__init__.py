"""What a long training run needs beyond the tutorial, beside dcgan.py: one module per
concern. dcgan.py is the tutorial, whole; each extra appears in it as one call whose module
or object names it (`checkpoint_file.save(state)`, `monitor.check_grid(...)`).

The modules, each building only on those before it (no cycle, and none imports dcgan):

    errors           UserError: a problem the user can fix, said in one line
    files            atomic writes, locks, CSV, PNG grids
    devices          this process's place in the job (Process), devices, torchrun, wrappers
    stopping         stop signals, divergence
    time_limit       --max-time
    data             FaceImages (the tutorial's ImageFolder), the decode-once cache, Batches
    download         --download: CelebA, verified and resumable
    ema              --ema
    techniques       GAN techniques from the literature: --diffaug, --loss hinge,
                     --spectral-norm, --lr-d/--lr-g
    checkpoints      the checkpoint dict, exact resume, generators from saved weights
    tensorboard_log  --tensorboard
    metrics          metrics.csv, SWD
    fidelity         FID and KID (torch-fidelity); --eval-every's evaluation
    health           the health monitor
    progress         the progress bar, a line an epoch in logs, progress/*.png
    outdir           the outdir held for the run, config.json
    sharing          the push command and --push-to-hub; hf:// generators
    inputs           every input checked before the first write
    sampling         the generate and evaluate commands
    cli              the parsers, the settings resolved once, one line for each error

What a module needs of dcgan.py (the model classes, the inputs) is passed in as a plain
argument; optional libraries (torch-fidelity, huggingface_hub, TensorBoard) are imported
by the function that uses them.

The growth rule: a new feature is one new module here, at most one hook in dcgan.py, and
its own group of flags (one add_*_flags function in cli).
"""
