"""Training: losses, augmentation, cuboid sampling, a generic loop with checkpoints, and task configs.

``clinseg.train.airway`` trains the thesis airway U-Net (``clinseg.nets.airway_unet``) on ATM'22-layout
data; the command is ``clinseg train airway``.
"""
