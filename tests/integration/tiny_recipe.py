"""A tiny real recipe (built-in components, embedded photos) for end-to-end tests."""

TINY = """
name = "tiny"

[model.encoder]
type = "taming"
ch = 32
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = [8]
z_channels = 8
resolution = 16

[model.quantizer]
type = "factorized"
dim = 8
codebook_size = 32
codebook_dim = 4

[model.decoder]
type = "taming"
ch = 32
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = [8]
z_channels = 8
resolution = 16

[model.discriminator]
type = "patchgan"
ndf = 8
n_layers = 1
norm = "actnorm"

[data]
type = "sample_photos"
resolution = 16
samples_per_epoch = 64
eval_crops = 2

[loss.pixel]
type = "l1"

[loss.codebook]
type = "quantizer"

[loss.gan]
type = "gan"
weight = 0.5
start_step = 2

[train]
steps = 6
batch_size = 4
log_every = 1
image_every = 3
checkpoint_every = 3
eval_batches = 1

[train.optimizer]
lr = 1e-3
warmup_steps = 2
schedule = "cosine"
grad_clip = 1.0
"""
