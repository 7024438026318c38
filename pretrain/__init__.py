"""Pretraining of frozen4d encoders: SimpleMAE, LayerLock and the latent-without-freezing
collapse control (docs/design.md §5). Entry point: ``python -m pretrain.run model=<family>_<size>``.

One idea per module:

- ``recipes``     the recipe table (objective + schedule per family and size) and its resolution
- ``layerlock``   the freezing schedule (which blocks are frozen, what is predicted at a step) and
                  the learning rate: cosine with warmup and re-warmups at target switches
- ``masking``     per-sample random tubelet masking and pixel patchification
- ``model``       the pretraining wrapper around ``VideoViT``: decoder tokens, heads, losses
- ``optim``       AdamW over the trainable parameters, rebuilt (state kept) when blocks freeze
- ``data``        clips -> uint8 batches in a seeded, resumable, rank-sharded order
- ``collapse``    feature std and effective rank (collapse monitors)
- ``state``       the full training state: atomic save, ``weights_only`` load, RNG capture
- ``distributed`` torch.distributed set-up from torchrun's environment
- ``metrics_log`` JSONL metrics and the end-of-run plot
- ``flops``       analytic FLOP count of one training step (predicted LayerLock savings)
- ``loop``        the loop every trainer runs: progress, logging, checkpoints, divergence, SIGTERM / Ctrl-C
- ``train``       the self-supervised trainer (its updates, phases, DDP, state and export)
- ``supervised``  the supervised control: the encoder trained on the world's ground truth
- ``correspondence`` the supervised control's dense-correspondence objective (the world's tracks)
- ``config``      the typed ``pretrain`` config node
- ``run``         the hydra entry point
- ``convergence`` the layer-convergence probe (freeze blocks 1..L at step T, continue, compare)
- ``analyze``     ``python -m pretrain.analyze convergence|collapse``: the paper's analyses on your runs
"""
