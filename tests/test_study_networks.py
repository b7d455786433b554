"""Each study's network at the study's own input size: layer output shapes and parameter
counts against the study's table (the Keras summaries in /work/shared/studies/).

Keras counts a batch norm's running mean and variance as (non-trainable) parameters;
torch keeps them as buffers, so the torch counts below are the tables' *trainable* ones:
a batch norm over c channels is 4c in a table and 2c here.
"""

from __future__ import annotations

import torch
from torch import nn

from aerestore.models import create_model


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


def kinds(module: nn.Module) -> list[str]:
    """The leaf layers' class names, in order."""
    return [type(m).__name__ for m in module.modules() if not list(m.children())]


POOLED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.MaxPool2d, nn.Upsample)
CCP_BLOCK = ["Conv2d", "ReLU", "BatchNorm2d"] * 2 + ["MaxPool2d"]  # conv, ReLU, then batch norm
# The bottleneck study's CCP encoder and code (section 2.1), 64 x 64 x 3 in:
#   conv 3->32:      3*9*32 + 32    =      896 + bn 64  (2c: the table's trainable count)
#   conv 32->32:    32*9*32 + 32    =    9,248 + bn 64
#   conv 32->64:    32*9*64 + 64    =   18,496 + bn 128
#   conv 64->64:    64*9*64 + 64    =   36,928 + bn 128
#   conv 64->128:   64*9*128 + 128  =   73,856 + bn 256
#   conv 128->128: 128*9*128 + 128  =  147,584 + bn 256     (convs 287,008, bn 896)
#   dense 8192->4096: 8192*4096 + 4096 = 33,558,528 + bn 8,192 (the code: latent 4096)
CCP_ENCODER = 287008 + 896 + 33558528 + 8192  # 33,854,624
# decoder: dense 4096->4096 (8 x 8 x 64): 4096*4096 + 4096 = 16,781,312 + bn 8,192
CCP_DENSE = 16781312 + 8192
CCP_ENCODER_SHAPES = [
    (32, 64, 64), (32, 64, 64), (32, 32, 32), (64, 32, 32), (64, 32, 32), (64, 16, 16),
    (128, 16, 16), (128, 16, 16), (128, 8, 8), (4096,),
]


def ccp_at_the_study(decoder: str):
    model = create_model("ccp_ae", latent=4096, block=64, decoder=decoder)
    assert count(model.encoder) == CCP_ENCODER == 33854624
    assert kinds(model.encoder) == CCP_BLOCK * 3 + ["Flatten", "Linear", "BatchNorm1d"]
    assert kinds(model.decoder.dense) == ["Linear", "BatchNorm1d"]  # linear, no ReLU
    shapes = layer_shapes(model, torch.rand(2, 3, 64, 64), POOLED)
    assert shapes[:10] == CCP_ENCODER_SHAPES
    return model, shapes[10:]  # the decoder's


def test_ccp_ae_is_the_bottleneck_study_network_1():
    model, shapes = ccp_at_the_study("convt")
    # decoder type 1: convT 64->64 (s2): 64*9*64 + 64 = 36,928 + bn 128; convT 64->32 (s2):
    # 64*9*32 + 32 = 18,464 + bn 64; convT 32->16 (s2): 32*9*16 + 16 = 4,624 + bn 32;
    # conv 16->3: 16*9*3 + 3 = 435; sum 60,675
    assert count(model.decoder) == CCP_DENSE + 36928 + 128 + 18464 + 64 + 4624 + 32 + 435
    assert count(model) == 50704803  # Table 1, network 1
    assert kinds(model.decoder.convs) == ["ConvTranspose2d", "ReLU", "BatchNorm2d"] * 3 + ["Conv2d", "Sigmoid"]
    assert shapes == [(4096,), (64, 16, 16), (32, 32, 32), (16, 64, 64), (3, 64, 64)]


def test_ccp_ae_upsample_is_the_bottleneck_study_network_2():
    model, shapes = ccp_at_the_study("upsample")
    # decoder type 2: the same widths at stride 1 (a stride-1 transposed conv that keeps
    # the side is built as a conv: the same count), upsampling has no parameters
    assert count(model) == 50704803  # Table 1, network 2
    assert kinds(model.decoder.convs) == (["Conv2d", "ReLU", "BatchNorm2d", "Upsample"] * 3
                                          + ["Conv2d", "Sigmoid"])
    assert shapes == [(4096,), (64, 8, 8), (64, 16, 16), (32, 16, 16), (32, 32, 32),
                      (16, 32, 32), (16, 64, 64), (3, 64, 64)]
    assert count(create_model("ccp_ae_upsample", latent=4096, block=64)) == 50704803  # the preset


def test_ccp_ae_convt2_is_the_bottleneck_study_network_3():
    model, shapes = ccp_at_the_study("convt2")
    # decoder type 3: convT 64->32 (s2): 18,464 + bn 64; convT 32->32: 9,248 + bn 64;
    # convT 32->16 (s2): 4,624 + bn 32; convT 16->16: 2,320 + bn 32; convT 16->8 (s2):
    # 16*9*8 + 8 = 1,160 + bn 16; convT 8->8: 584 + bn 16; conv 8->3: 8*9*3 + 3 = 219
    assert count(model.decoder) == CCP_DENSE + 18528 + 9312 + 4656 + 2352 + 1176 + 600 + 219
    assert count(model) == 50680971  # Table 1, network 3
    assert count(create_model("ccp_ae_convt2", latent=4096, block=64)) == 50680971  # the preset
    assert shapes == [(4096,), (32, 16, 16), (32, 16, 16), (16, 32, 32), (16, 32, 32),
                      (8, 64, 64), (8, 64, 64), (3, 64, 64)]


def test_ccp_ae_at_the_pipeline_block():
    model = create_model("ccp_ae", latent=64, block=18)  # pools round up: 18 -> 9 -> 5 -> 3
    assert layer_shapes(model, torch.rand(2, 3, 18, 18), POOLED) == [
        (32, 18, 18), (32, 18, 18), (32, 9, 9), (64, 9, 9), (64, 9, 9), (64, 5, 5),
        (128, 5, 5), (128, 5, 5), (128, 3, 3), (64,), (576,),
        (64, 5, 5), (32, 9, 9), (16, 18, 18), (3, 18, 18),
    ]


def test_fcn_ae_is_the_bottleneck_study_figure_8():
    model = create_model("fcn_ae", latent=4096, block=64)
    # No count in the text (Figure 8 is lost); from the layers, 64 x 64 x 3 in:
    #   conv 3->32:   3*9*32 + 32 =    896 + bn 64;  conv 32->32: 32*9*32 + 32 =  9,248 + bn 64
    #   conv 32->48: 32*9*48 + 48 = 13,872 + bn 96;  conv 48->48: 48*9*48 + 48 = 20,784 + bn 96
    #   conv 48->64: 48*9*64 + 64 = 27,712 + bn 128; conv 64->64: 64*9*64 + 64 = 36,928 + bn 128
    #   = 109,440 + 576 = 110,016 (the code: the last pooled map, 8 x 8 x 64 = 4096)
    assert count(model.encoder) == 109440 + 576 == 110016
    assert kinds(model.encoder) == CCP_BLOCK * 3  # no 1x1 code conv at the study's latent
    #   convT 64->32 (s2): 64*9*32 + 32 = 18,464 + bn 64; convT 32->16 (s2): 4,624 + bn 32;
    #   convT 16->8 (s2): 16*9*8 + 8 = 1,160 + bn 16; conv 1x1 8->3: 8*3 + 3 = 27; = 24,387
    assert count(model.decoder) == 18528 + 4656 + 1176 + 27 == 24387
    assert count(model) == 134403
    assert kinds(model.decoder) == ["ConvTranspose2d", "ReLU", "BatchNorm2d"] * 3 + ["Conv2d", "Sigmoid"]
    assert model.latent_shape == (64, 8, 8)
    assert layer_shapes(model, torch.rand(2, 3, 64, 64), POOLED) == [
        (32, 64, 64), (32, 64, 64), (32, 32, 32), (48, 32, 32), (48, 32, 32), (48, 16, 16),
        (64, 16, 16), (64, 16, 16), (64, 8, 8), (32, 16, 16), (16, 32, 32), (8, 64, 64), (3, 64, 64),
    ]


def test_fcn_ae_at_the_pipeline_block():
    model = create_model("fcn_ae", latent=64, block=18)
    # 18 -> 9 -> 5 -> 3; c = round(64 / 9) = 7: a 1x1 conv 64->7 (64*7 + 7 = 455) ends the encoder
    assert count(model.encoder) == 110016 + 455
    assert model.latent_shape == (7, 3, 3)
    assert layer_shapes(model, torch.rand(2, 3, 18, 18), POOLED)[8:] == [
        (64, 3, 3), (7, 3, 3), (32, 5, 5), (16, 9, 9), (8, 18, 18), (3, 18, 18),
    ]
