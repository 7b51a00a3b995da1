"""Published cells of the DARTS space, shipped by name. Each entry cites where the cell was published.

The cells are data, transcribed from the genotype files of the authors' repositories.
SDARTS-RS/ADV cells are not shipped: their official repository could not be consulted to verify them.
"""

from __future__ import annotations

from lightning_nas.search_spaces.darts.genotype import Genotype


def _g(normal: list[tuple[str, int]], reduce: list[tuple[str, int]], source: str,
       normal_concat: tuple[int, ...] = (2, 3, 4, 5), reduce_concat: tuple[int, ...] = (2, 3, 4, 5)) -> Genotype:
    return Genotype(tuple(normal), normal_concat, tuple(reduce), reduce_concat, source=source)


_DARTS = "Liu et al., DARTS, ICLR 2019; quark0/darts cnn/genotypes.py"

PUBLISHED: dict[str, Genotype] = {
    # first-order DARTS cell (3.00 +- 0.14 % on CIFAR-10). The builder gives 3,169,414 parameters for it;
    # the DARTS table lists 3.3M for first order, so that row is not reproduced by this cell's count.
    "DARTS_V1": _g(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        _DARTS + " (DARTS_V1)",
    ),
    # second-order DARTS cell (2.76 +- 0.09 % on CIFAR-10, 3.3M params)
    "DARTS_V2": _g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        _DARTS + " (DARTS_V2)",
    ),
    "PDARTS": _g(
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
        "Chen et al., Progressive DARTS, ICCV 2019; chenxin061/pdarts genotypes.py (PDARTS)",
    ),
    "PC_DARTS_cifar": _g(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        "Xu et al., PC-DARTS, ICLR 2020; yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_cifar)",
    ),
    "PC_DARTS_image": _g(
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
        "Xu et al., PC-DARTS, ICLR 2020; yuhuixu1993/PC-DARTS genotypes.py (PC_DARTS_image)",
    ),
    "DrNAS_cifar10": _g(
        [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2), ("dil_conv_5x5", 3)],
        [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("sep_conv_5x5", 1), ("dil_conv_5x5", 3), ("skip_connect", 4), ("sep_conv_5x5", 1)],
        "Chen et al., DrNAS, ICLR 2021; xiangning-chen/DrNAS DARTS-space/genotypes.py (DrNAS_cifar10)",
    ),
    "DrNAS_imagenet": _g(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 0), ("dil_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 2), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1)],
        "Chen et al., DrNAS, ICLR 2021; xiangning-chen/DrNAS DARTS-space/genotypes.py (DrNAS_imagenet)",
    ),
    # reference cells from outside the DARTS op set, as listed in the DARTS repository
    "NASNet": _g(
        [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
         ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
         ("sep_conv_3x3", 1), ("skip_connect", 1)],
        [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
         ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
         ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
        "Zoph et al., NASNet-A, CVPR 2018; as listed in quark0/darts cnn/genotypes.py",
        normal_concat=(2, 3, 4, 5, 6), reduce_concat=(4, 5, 6),
    ),
    "AmoebaNet": _g(
        [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
         ("skip_connect", 0), ("avg_pool_3x3", 1)],
        [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
         ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
         ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
        "Real et al., AmoebaNet-A, AAAI 2019; as listed in quark0/darts cnn/genotypes.py",
        normal_concat=(4, 5, 6), reduce_concat=(3, 4, 6),
    ),
    # the two other cells of Shu et al.'s width/depth figure (ICLR 2020, Fig. 1), from their repository
    "ENAS": _g(
        [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0),
         ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
         ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)],
        [("sep_conv_5x5", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 1),
         ("sep_conv_3x3", 1), ("avg_pool_3x3", 1), ("sep_conv_5x5", 4), ("avg_pool_3x3", 1),
         ("sep_conv_3x3", 5), ("sep_conv_5x5", 0)],
        "Pham et al., ENAS, ICML 2018; as listed in shuyao95/Understanding-NAS genotypes.py (ENAS)",
        normal_concat=(2, 3, 4, 5, 6), reduce_concat=(2, 3, 6),
    ),
    "SNAS_mild": _g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_3x3", 1),
         ("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 1), ("skip_connect", 2), ("dil_conv_5x5", 2), ("max_pool_3x3", 0)],
        "Xie et al., SNAS (mild constraint), ICLR 2019; as listed in shuyao95/Understanding-NAS genotypes.py "
        "(SNAS_MILD)",
    ),
}
PUBLISHED["DARTS"] = PUBLISHED["DARTS_V2"]
