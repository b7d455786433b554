"""Each study's network at the study's own input size: layer output shapes and parameter
counts against the study's table (the Keras summaries in /work/shared/studies/).

Keras counts a batch norm's running mean and variance as (non-trainable) parameters;
torch keeps them as buffers, so the torch counts below are the tables' *trainable* ones:
a batch norm over c channels is 4c in a table and 2c here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aerestore.models import create_model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layer_shapes(model, x: torch.Tensor, kinds=(nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) -> list[tuple]:
    """Output shapes (without the batch) of the conv / transposed-conv / dense layers, in
    the order they run, for one eval-mode forward pass."""
    shapes: list[tuple] = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in model.modules() if isinstance(m, kinds)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_conv_ae_is_the_celeba_study_figures_2_and_3():
    model = create_model("conv_ae", latent=60, block=18)
    # Figure 2 (encoder), 18 x 18 x 3 in:
    #   conv 3->16:    3*9*16 + 16   =    448   (18x18)
    #   conv 16->32:  16*9*32 + 32   =  4,640   (9x9, stride 2)
    #   conv 32->48:  32*9*48 + 48   = 13,872   (9x9)
    #   conv 48->72:  48*9*72 + 72   = 31,176   (5x5, stride 2)
    #   conv 72->128: 72*9*128 + 128 = 83,072   (5x5)
    #   batch norm 128: 2*128        =    256   (the table's 512 less 256 running stats)
    #   dense 3200->96: 3200*96 + 96 = 307,296
    #   dense 96->60:   96*60 + 60   =   5,820
    #   sum                          = 446,580
    assert count(model.encoder) == 448 + 4640 + 13872 + 31176 + 83072 + 256 + 307296 + 5820 == 446580
    # Figure 3 (decoder), 60 in:
    #   dense 60->1296: 60*1296 + 1296 = 79,056, reshape 3x3x144
    #   convT 144->128: 144*9*128 + 128 = 166,016 (3x3)
    #   convT 128->72:  128*9*72 + 72   =  83,016 (6x6, stride 2)
    #   convT 72->48:    72*9*48 + 48   =  31,152 (6x6)
    #   convT 48->32:    48*9*32 + 32   =  13,856 (18x18, stride 3)
    #   convT 32->16:    32*9*16 + 16   =   4,624 (18x18)
    #   convT 16->3:     16*9*3 + 3     =     435 (18x18)
    #   sum                             = 378,155
    assert count(model.decoder) == 79056 + 166016 + 83016 + 31152 + 13856 + 4624 + 435 == 378155
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1  # one, after the last conv
    assert layer_shapes(model, torch.rand(2, 3, 18, 18)) == [
        (16, 18, 18), (32, 9, 9), (48, 9, 9), (72, 5, 5), (128, 5, 5), (96,), (60,),
        (1296,), (128, 3, 3), (72, 6, 6), (48, 6, 6), (32, 18, 18), (16, 18, 18), (3, 18, 18),
    ]


def test_conv_ae_keeps_the_earlier_batch_norm_as_an_option():
    model = create_model("conv_ae", block=18, batch_norm="all")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.encoder.modules()) == 5


def test_vae_is_the_celeba_study_figure_6():
    model = create_model("vae", latent=2, block=16)
    # Figure 6, 16 x 16 x 3 in:
    #   conv 3->32 (stride 2):   3*9*32 + 32  =    896  (8x8)
    #   batch norm 32:           2*32         =     64  (table: 128)
    #   conv 32->64 (stride 2): 32*9*64 + 64  = 18,496  (4x4)
    #   batch norm 64:           2*64         =    128  (table: 256)
    #   dense 1024->16:       1024*16 + 16    = 16,400
    #   z_mean, z_log_var:   2 * (16*2 + 2)   =     68
    #   sum                                   = 36,052  (table: 36,244 with 192 running stats)
    assert count(model.encoder) == 896 + 64 + 18496 + 128 + 16400 + 68 == 36052
    # decoder (the Keras VAE example's, which Figure 6's encoder follows):
    #   dense 2->4*4*64:   2*1024 + 1024  =  3,072
    #   convT 64->64 (s2): 64*9*64 + 64   = 36,928 (8x8)
    #   convT 64->32 (s2): 64*9*32 + 32   = 18,464 (16x16)
    #   convT 32->3:       32*9*3 + 3     =    867
    assert count(model.decoder) == 3072 + 36928 + 18464 + 867 == 59331
    assert layer_shapes(model, torch.rand(2, 3, 16, 16)) == [
        (32, 8, 8), (64, 4, 4), (16,), (2,), (2,),
        (1024,), (64, 8, 8), (32, 16, 16), (3, 16, 16),
    ]


def test_vae_at_the_pipeline_block():
    model = create_model("vae", latent=64, block=18)  # 18 -> 9 -> 5; decoder 5 -> 9 -> 18
    assert layer_shapes(model, torch.rand(2, 3, 18, 18)) == [
        (32, 9, 9), (64, 5, 5), (16,), (64,), (64,),
        (1600,), (64, 9, 9), (32, 18, 18), (3, 18, 18),
    ]


def test_vae_lfw_is_the_lfw_study_summaries():
    model = create_model("vae_lfw", latent=1024, block=32)
    # encoder, 32 x 32 x 3 in (each conv + ReLU + batch norm):
    #   conv 3->32:          3*9*32 + 32  =       896 + bn 64
    #   conv 32->64 (s2):   32*9*64 + 64  =    18,496 + bn 128
    #   conv 64->64 (s2):   64*9*64 + 64  =    36,928 + bn 128
    #   conv 64->64:        64*9*64 + 64  =    36,928 + bn 128
    #   mu, log_variance: 2 * (4096*1024 + 1024) = 8,390,656
    #   sum = 8,484,352 (the summary's trainable params)
    assert count(model.encoder) == 896 + 64 + 18496 + 128 + 2 * (36928 + 128) + 8390656 == 8484352
    # decoder: dense 1024->4096: 1024*4096 + 4096 = 4,198,400; three convT 64->64
    #   (36,928 + bn 128 each); convT 64->3: 64*9*3 + 3 = 1,731; sum 4,311,299 (trainable)
    assert count(model.decoder) == 4198400 + 3 * (36928 + 128) + 1731 == 4311299
    assert not any(isinstance(m, nn.ReLU) for m in model.decoder.dense)  # a linear dense layer
    assert layer_shapes(model, torch.rand(2, 3, 32, 32)) == [
        (32, 32, 32), (64, 16, 16), (64, 8, 8), (64, 8, 8), (1024,), (1024,),
        (4096,), (64, 8, 8), (64, 16, 16), (64, 32, 32), (3, 32, 32),
    ]


# Figure 5 (16 x 16 x 3 in), the residual encoder:
#   conv_a 3->32 (s2):   3*9*32 + 32  =    896  (8x8)
#   batch norm 32:       2*32         =     64  (table: 128)
#   shortcut 3->32 (s2): 3*9*32 + 32  =    896  (8x8, from the input)
#   conv_b 32->32:      32*9*32 + 32  =  9,248  (8x8)
#   dense 2048->16:   2048*16 + 16    = 32,784
RESIDUAL_ENCODER = 896 + 64 + 896 + 9248 + 32784


def test_resnet_vae_is_the_celeba_study_figure_5():
    model = create_model("resnet_vae", latent=2, block=16)
    #   + z_mean, z_log_var: 2 * (16*2 + 2) = 68 -> 43,956 (table: 44,020 with 64 running stats)
    assert count(model.encoder) == RESIDUAL_ENCODER + 68 == 43956
    assert count(model.decoder) == 59331  # the vae's decoder (test_vae_is_the_celeba_study_figure_6)
    assert layer_shapes(model, torch.rand(2, 3, 16, 16)) == [
        (32, 8, 8), (32, 8, 8), (32, 8, 8), (16,), (2,), (2,),  # conv_a, conv_b, shortcut, dense
        (1024,), (64, 8, 8), (32, 16, 16), (3, 16, 16),
    ]


def test_resnet_ncut_is_figure_5_with_the_basic_networks_decoder():
    model = create_model("resnet_ncut", latent=2, block=16)
    assert not model.variational
    #   + the code, dense 16->2: 16*2 + 2 = 34 -> 43,922
    assert count(model.encoder) == RESIDUAL_ENCODER + 34 == 43922
    # Figure 3's decoder at 16 px (3 -> 6 -> 16), latent 2: dense 2*1296 + 1296 = 3,888,
    # then the same transposed convs as at 18 px: 378,155 - 79,056 (Figure 3's dense) = 299,099
    assert count(model.decoder) == 3888 + 299099 == 302987
    model = create_model("resnet_ncut", latent=60, block=18)
    assert count(model.decoder) == 378155  # exactly Figure 3 at the study's 18 px
    assert layer_shapes(model, torch.rand(2, 3, 18, 18))[:5] == [(32, 9, 9), (32, 9, 9), (32, 9, 9), (16,), (60,)]


def test_conv_ae_v1_is_the_blur_study_version_1():
    model = create_model("conv_ae_v1", block=128)
    # 128 x 128 x 3 in; conv 3->64 (s2): 3*9*64 + 64 = 1,792; conv 64->32 (s2): 64*9*32 + 32
    # = 18,464; convT 32->32 (s2): 32*9*32 + 32 = 9,248; convT 32->64 (s2): 32*9*64 + 64 =
    # 18,496; conv 64->3: 64*9*3 + 3 = 1,731; total 49,731 (the summary's)
    assert count(model) == 1792 + 18464 + 9248 + 18496 + 1731 == 49731
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.latent_shape == (32, 8, 8)
    assert layer_shapes(model, torch.rand(1, 3, 128, 128), (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.Upsample)) == [
        (64, 64, 64), (64, 32, 32), (32, 16, 16), (32, 8, 8),
        (32, 16, 16), (32, 32, 32), (64, 64, 64), (64, 128, 128), (3, 128, 128),
    ]


def test_conv_ae_v2_and_the_accordion_are_the_blur_study_version_2():
    model = create_model("conv_ae_v2", block=128)
    # conv 3->128 (s2): 27*128 + 128 = 3,584; conv 128->128 (s2): 1152*128 + 128 = 147,584;
    # conv 128->256 (s2): 1152*256 + 256 = 295,168; batch norm 256: 512 (the summary's 1,024
    # less 512 running stats); convT 256->128 (s2): 2304*128 + 128 = 295,040; convT 128->64
    # (s2): 1152*64 + 64 = 73,792; convT 64->3 (s2): 576*3 + 3 = 1,731; total 817,411
    assert count(model) == 3584 + 147584 + 295168 + 512 + 295040 + 73792 + 1731 == 817411
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1
    assert layer_shapes(model, torch.rand(1, 3, 128, 128)) == [
        (128, 64, 64), (128, 32, 32), (256, 16, 16), (128, 32, 32), (64, 64, 64), (3, 128, 128),
    ]
    # Accordion V1: two of them, 1,634,822 trainable (the summary's 1,635,846 less 1,024)
    assert count(create_model("accordion", block=128)) == 2 * 817411 == 1634822
