"""Colormaps for PNG previews, as 256-entry 8-bit RGB tables, without matplotlib.

The names and colours are matplotlib's, which CamServer renders its PNGs with (its default is
`rainbow`): entry i is the colour at i/255, each channel truncated to 8 bits as CamServer's
`uint8(colormap(x) * 255)` does. Maps matplotlib defines by formulas or line segments are
computed here from those definitions; the perceptual maps (viridis, plasma, inferno, magma,
cividis) are matplotlib's published tables (viridis, plasma, inferno and magma by Nathaniel J.
Smith, Stefan van der Walt and Eric Firing, CC0; cividis by Jamie R. Nunez, Christopher R.
Anderton and Ryan S. Renslow), stored as 8-bit hex. Every map also comes reversed, `<name>_r`.
"""

from __future__ import annotations

import math

import numpy as np

# Line segments per channel: (x, value) points, linear in between (matplotlib's segmentdata).
SEGMENTS = {
    "gray": [[(0, 0), (1, 1)]] * 3,
    "jet": [
        [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)],
        [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)],
        [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)],
    ],
    "hot": [
        [(0, 0.0416), (0.365079, 1), (1, 1)],
        [(0, 0), (0.365079, 0), (0.746032, 1), (1, 1)],
        [(0, 0), (0.746032, 0), (1, 1)],
    ],
    "cool": [[(0, 0), (1, 1)], [(0, 1), (1, 0)], [(0, 1), (1, 1)]],
    "spring": [[(0, 1), (1, 1)], [(0, 0), (1, 1)], [(0, 1), (1, 0)]],
    "summer": [[(0, 0), (1, 1)], [(0, 0.5), (1, 1)], [(0, 0.4), (1, 0.4)]],
    "autumn": [[(0, 1), (1, 1)], [(0, 0), (1, 1)], [(0, 0), (1, 0)]],
    "winter": [[(0, 0), (1, 0)], [(0, 0), (1, 1)], [(0, 1), (1, 0.5)]],
    "bone": [
        [(0, 0), (0.746032, 0.652778), (1, 1)],
        [(0, 0), (0.365079, 0.319444), (0.746032, 0.777778), (1, 1)],
        [(0, 0), (0.365079, 0.444444), (1, 1)],
    ],
    "copper": [[(0, 0), (0.809524, 1), (1, 1)], [(0, 0), (1, 0.7812)], [(0, 0), (1, 0.4975)]],
}
# Functions per channel (gnuplot's, as matplotlib's rainbow uses them), clipped to [0, 1].
FUNCTIONS = {
    "rainbow": (
        lambda x: np.abs(2 * x - 0.5),
        lambda x: np.sin(x * math.pi),
        lambda x: np.cos(x * math.pi / 2),
    ),
}
TABLES = {
    "viridis": (
        "44015444025544035745055845065a45085b46095c460b5e460c5f460e61470f624711634712654714664715"
        "6747166947186a48196b481a6c481c6e481d6f481e7048207148217248227348237447257547267647277747"
        "2878472a79472b7a472c7b462d7c462f7c46307d46317e45327f45347f453580453681443781443982433a83"
        "433b83433c84423d84423e854240854141864142864043874044873f45873f47883e48883e49893d4a893d4b"
        "893d4c893c4d8a3c4e8a3b508a3b518a3a528b3a538b39548b39558b38568b38578c37588c37598c365a8c36"
        "5b8c355c8c355d8c345e8d345f8d33608d33618d32628d32638d31648d31658d31668d30678d30688d2f698d"
        "2f6a8d2e6b8e2e6c8e2e6d8e2d6e8e2d6f8e2c708e2c718e2c728e2b738e2b748e2a758e2a768e2a778e2978"
        "8e29798e287a8e287a8e287b8e277c8e277d8e277e8e267f8e26808e26818e25828e25838d24848d24858d24"
        "868d23878d23888d23898d22898d228a8d228b8d218c8d218d8c218e8c208f8c20908c20918c1f928c1f938b"
        "1f948b1f958b1f968b1e978a1e988a1e998a1e998a1e9a891e9b891e9c891e9d881e9e881e9f881ea0871fa1"
        "871fa2861fa38620a48520a58521a68521a78422a78423a88323a98224aa8225ab8126ac8127ad8028ae7f29"
        "af7f2ab07e2bb17d2cb17d2eb27c2fb37b30b47a32b57a33b67935b77836b87738b97639b9763bba753dbb74"
        "3ebc7340bd7242be7144be7045bf6f47c06e49c16d4bc26c4dc26b4fc36951c46853c56755c66657c66559c7"
        "645bc8625ec96160c96062ca5f64cb5d67cc5c69cc5b6bcd596dce5870ce5672cf5574d05477d05279d1517c"
        "d24f7ed24e81d34c83d34b86d44988d5478bd5468dd64490d64392d74195d73f97d83e9ad83c9dd93a9fd938"
        "a2da37a5da35a7db33aadb32addc30afdc2eb2dd2cb5dd2bb7dd29bade27bdde26bfdf24c2df22c5df21c7e0"
        "1fcae01ecde01dcfe11cd2e11bd4e11ad7e219dae218dce218dfe318e1e318e4e318e7e419e9e419ece41aee"
        "e51bf1e51cf3e51ef6e61ff8e621fae622fde724"
    ),
    "plasma": (
        "0c078610078713068915068a18068b1b068c1d068d1f058e21058f2305902505912705922905932b05942d04"
        "942f04953104963304973404983604983804993a049a3b039a3d039b3f039c40039c42039d44039e45039e47"
        "029f49029f4a02a04c02a14e02a14f02a25101a25201a35401a35601a35701a45901a45a00a55c00a55e00a5"
        "5f00a66100a66200a66400a76500a76700a76800a76a00a76c00a86d00a86f00a87000a87200a87300a87500"
        "a87601a87801a87901a87b02a87c02a77e03a77f03a78104a78204a78405a68506a68607a68807a58908a58b"
        "09a48c0aa48e0ca48f0da3900ea3920fa29310a19511a19612a09713a099149f9a159e9b179e9d189d9e199c"
        "9f1a9ba01b9ba21c9aa31d99a41e98a51f97a72197a82296a92395aa2494ac2593ad2692ae2791af2890b02a"
        "8fb12b8fb22c8eb42d8db52e8cb62f8bb7308ab83289b93388ba3487bb3586bc3685bd3784be3883bf3982c0"
        "3b81c13c80c23d80c33e7fc43f7ec5407dc6417cc7427bc8447ac94579ca4678cb4777cc4876cd4975ce4a75"
        "cf4b74d04d73d14e72d14f71d25070d3516fd4526ed5536dd6556dd7566cd7576bd8586ad95969da5a68db5b"
        "67dc5d66dc5e66dd5f65de6064df6163df6262e06461e16560e26660e3675fe3685ee46a5de56b5ce56c5be6"
        "6d5ae76e5ae87059e87158e97257ea7356ea7455eb7654ec7754ec7853ed7952ed7b51ee7c50ef7d4fef7e4e"
        "f0804df0814df1824cf2844bf2854af38649f38748f48947f48a47f58b46f58d45f68e44f68f43f69142f792"
        "41f79341f89540f8963ff8983ef9993df99a3cfa9c3bfa9d3afa9f3afaa039fba238fba337fba436fca635fc"
        "a735fca934fcaa33fcac32fcad31fdaf31fdb030fdb22ffdb32efdb52dfdb62dfdb82cfdb92bfdbb2bfdbc2a"
        "fdbe29fdc029fdc128fdc328fdc427fdc626fcc726fcc926fccb25fccc25fcce25fbd024fbd124fbd324fad5"
        "24fad624fad824f9d924f9db24f8dd24f8df24f7e024f7e225f6e425f6e525f5e726f5e926f4ea26f3ec26f3"
        "ee26f2f026f2f126f1f326f0f525f0f623eff821"
    ),
    "inferno": (
        "00000300000400000601000701010901010b02010e02021003021204031404031605041806041b07051d0806"
        "1f0906210a07230b07260d08280e082a0f092d10092f120a32130a34140b36160b39170b3b190b3e1a0b401c"
        "0c431d0c451f0c47200c4a220b4c240b4e260b50270b52290b542b0a562d0a582e0a5a300a5c32095d34095f"
        "3509603709613909623b09643c09653e0966400966410967430a68450a69460a69480b6a4a0b6a4b0c6b4d0c"
        "6b4f0d6c500d6c520e6c530e6d550f6d570f6d58106d5a116d5b116e5d126e5f126e60136e62146e63146e65"
        "156e66156e68166e6a176e6b176e6d186e6e186e70196e72196d731a6d751b6d761b6d781c6d7a1c6d7b1d6c"
        "7d1d6c7e1e6c801f6b811f6b83206b85206a86216a88216a8922698b22698d23698e24689024689125679325"
        "679526669626669827659928649b28649c29639e2963a02a62a12b61a32b61a42c60a62c5fa72d5fa92e5eab"
        "2e5dac2f5cae305baf315bb1315ab23259b43358b53357b73456b83556ba3655bb3754bd3753be3852bf3951"
        "c13a50c23b4fc43c4ec53d4dc73e4cc83e4bc93f4acb4049cc4148cd4247cf4446d04544d14643d24742d448"
        "41d54940d64a3fd74b3ed94d3dda4e3bdb4f3adc5039dd5238de5337df5436e05634e25733e35832e45a31e5"
        "5b30e65c2ee65e2de75f2ce8612be9622aea6428eb6527ec6726ed6825ed6a23ee6c22ef6d21f06f1ff0701e"
        "f1721df2741cf2751af37719f37918f47a16f57c15f57e14f68012f68111f78310f7850ef8870df8880cf88a"
        "0bf98c09f98e08f99008fa9107fa9306fa9506fa9706fb9906fb9b06fb9d06fb9e07fba007fba208fba40afb"
        "a60bfba80dfbaa0efbac10fbae12fbb014fbb116fbb318fbb51afbb71cfbb91efabb21fabd23fabf25fac128"
        "f9c32af9c52cf9c72ff8c931f8cb34f8cd37f7cf3af7d13cf6d33ff6d542f5d745f5d948f4db4bf4dc4ff3de"
        "52f3e056f3e259f2e45df2e660f1e864f1e968f1eb6cf1ed70f1ee74f1f079f1f27df2f381f2f485f3f689f4"
        "f78df5f891f6fa95f7fb99f9fc9dfafda0fcfea4"
    ),
    "magma": (
        "00000300000400000601000701010901010b02020d02020f03031104031304041505041706051907051b0806"
        "1d09071f0a07220b08240c09260d0a280e0a2a0f0b2c100c2f110c31120d33140d35150e38160e3a170f3c18"
        "0f3f1a10411b10441c10461e10491f114b20114d2211502311522511552611572811592a115c2b115e2d1060"
        "2f1062301065321067341068350f6a370f6c390f6e3b0f6f3c0f713e0f72400f73420f74430f75450f76470f"
        "774810784a10794b10794d117a4f117b50127b52127c53137c55137d57147d58157e5a157e5b167e5d177e5e"
        "177f60187f61187f63197f651a80661a80681b80691c806b1c806c1d806e1e816f1e81711f81731f81742081"
        "7621817721817922817a22817c23817e24817f24818125818225818426818526818727818928818a28818c29"
        "808d29808f2a80912a80922b80942b80952c80972c7f992d7f9a2d7f9c2e7f9e2e7e9f2f7ea12f7ea3307ea4"
        "307da6317da7317da9327cab337cac337bae347bb0347bb1357ab3357ab53679b63679b83778b93778bb3877"
        "bd3977be3976c03a75c23a75c33b74c53c74c63c73c83d72ca3e72cb3e71cd3f70ce4070d0416fd1426ed342"
        "6dd4436dd6446cd7456bd9466ada4769dc4869dd4968de4a67e04b66e14c66e24d65e44e64e55063e65162e7"
        "5262e85461ea5560eb5660ec585fed595fee5b5eee5d5def5e5df0605df1615cf2635cf3655cf3675bf4685b"
        "f56a5bf56c5bf66e5bf6705bf7715bf7735cf8755cf8775cf9795cf97b5df97d5dfa7f5efa805efa825ffb84"
        "60fb8660fb8861fb8a62fc8c63fc8e63fc9064fc9265fc9366fd9567fd9768fd9969fd9b6afd9d6bfd9f6cfd"
        "a16efda26ffda470fea671fea873feaa74feac75feae76feaf78feb179feb37bfeb57cfeb77dfeb97ffebb80"
        "febc82febe83fec085fec286fec488fec689fec78bfec98dfecb8efdcd90fdcf92fdd193fdd295fdd497fdd6"
        "98fdd89afdda9cfddc9dfddd9ffddfa1fde1a3fce3a5fce5a6fce6a8fce8aafceaacfcecaefceeb0fcf0b1fc"
        "f1b3fcf3b5fcf5b7fbf7b9fbf9bbfbfabdfbfcbf"
    ),
    "cividis": (
        "00224d00234f00235000245200255400265500265700275900285b00285c00295e002a60002a62002b64002c"
        "66002c67002d69002e6b002f6d002f6f0030700030700031700031700432700833700b33700e347011356f14"
        "366f16366f18376f1a386f1c386e1d396e1f3a6e213b6e223b6e243c6e253d6d273d6d283e6d2a3f6d2b3f6d"
        "2c406d2e416c2f426c30426c31436c32446c34446c35456c36466c37466c38476c39486c3a486b3b496b3d4a"
        "6b3e4b6b3f4b6b404c6b414d6b424d6b434e6b444f6b454f6b46506b47516b48516b49526b4a536b4b546c4c"
        "546c4d556c4e566c4e566c4f576c50586c51586c52596c535a6c545a6c555b6d565c6d575d6d585d6d595e6d"
        "595f6d5a5f6d5b606e5c616e5d616e5e626e5f636e60646e61646f61656f62666f63666f64676f6568706669"
        "70676970686a70686b71696b716a6c716b6d716c6d726d6e726e6f726e70736f707370717371727372737473"
        "73747474757475757575757676767777767878767978777979777a7a777b7b777c7b787d7c787e7d787f7d78"
        "807e78817f788280788380788481788582788583788683788784788885788986788a86788b87788c88788d89"
        "788e89788f8a77908b77918c77928c77938d77948e77958f77968f779790769891769992769a93769b93769c"
        "94769d95759e96759f9675a09775a19874a29974a39a74a49a74a59b73a69c73a79d73a89e73a99e72aa9f72"
        "aba072aca171ada271aea271afa370b0a470b1a570b2a66fb3a66fb4a76fb5a86eb6a96eb7aa6db8ab6db9ab"
        "6dbaac6cbbad6cbcae6bbdaf6bbeb06abfb06ac1b169c2b269c3b368c4b468c5b567c6b567c7b666c8b765c9"
        "b865cab964cbba64ccbb63cdbc62cebc62cfbd61d0be60d2bf60d3c05fd4c15ed5c25ed6c35dd7c35cd8c45b"
        "d9c55adac65adbc759dcc858dec957dfca56e0cb55e1cc54e2cc53e3cd52e4ce51e5cf50e6d04fe8d14ee9d2"
        "4dead34cebd44becd54aedd648eed747efd846f1d944f2da43f3da42f4db40f5dc3ff6dd3df8de3bf9df3afa"
        "e038fbe136fde234fde333fde534fde636fde737"
    ),
}
ALIASES = {"grey": "gray"}


def names() -> list[str]:
    base = sorted([*SEGMENTS, *FUNCTIONS, *TABLES, *ALIASES])
    return base + [f"{name}_r" for name in base]


def table(name: str) -> np.ndarray:
    """The (256, 3) uint8 table of a colormap; KeyError for an unknown name."""
    reverse = name.endswith("_r")
    base = ALIASES.get(name[:-2] if reverse else name, name[:-2] if reverse else name)
    if base in TABLES:
        colours = np.frombuffer(bytes.fromhex("".join(TABLES[base])), np.uint8).reshape(256, 3)
        return colours[::-1] if reverse else colours
    x = np.linspace(0.0, 1.0, 256)
    if base in FUNCTIONS:
        channels = [np.clip(f(1 - x if reverse else x), 0.0, 1.0) for f in FUNCTIONS[base]]
    else:
        channels = [_segments(points, x, reverse) for points in SEGMENTS[base]]
    return (np.stack(channels, axis=1) * 255).astype(np.uint8)


def _segments(points, x, reverse: bool) -> np.ndarray:
    """Linear interpolation between the points at x, in matplotlib's arithmetic (its
    truncated 8-bit values then agree to the last bit); reversed: the points mirrored."""
    xs, ys = (np.array(values, np.float64) for values in zip(*points))
    if reverse:
        xs, ys = 1.0 - xs[::-1], ys[::-1]
    xs, x = xs * (x.size - 1), x * (x.size - 1)  # in table entries
    inner = np.searchsorted(xs, x)[1:-1]
    distance = (x[1:-1] - xs[inner - 1]) / (xs[inner] - xs[inner - 1])
    return np.concatenate(
        [[ys[0]], distance * (ys[inner] - ys[inner - 1]) + ys[inner - 1], [ys[-1]]]
    )
