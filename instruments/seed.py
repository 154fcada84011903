"""The demo province for `booking demo`: about 300 institutions of every kind in all 21 市州 (weighted toward 成都)
and ~12,500 instruments across the classification tree, with realistic names, models, manufacturers and values.

Deterministic (a seeded RNG) and fast: rows go in with COPY, the search triggers fill the search tables, and one
`demo.seeded` activity entry summarises the lot instead of 12,500 entries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Facility, Institution
from booking.activity.service import record
from booking.core.regions import CITIES
from instruments.service import promote_frequent_terms

SEED = 20270101
TARGET_INSTRUMENTS = 12_500

# (city, weight): the provincial capital holds most of the research capacity.
CITY_WEIGHTS = {
    "510100": 46,
    "510700": 9,
    "510600": 5,
    "510300": 3,
    "510400": 3,
    "510500": 4,
    "510800": 2,
    "510900": 2,
    "511000": 2,
    "511100": 3,
    "511300": 4,
    "511400": 2,
    "511500": 3,
    "511600": 1,
    "511700": 2,
    "511800": 2,
    "511900": 1,
    "512000": 1,
    "513200": 1,
    "513300": 1,
    "513400": 2,
}
AREA_CODES = {
    "510100": "028",
    "510300": "0813",
    "510400": "0812",
    "510500": "0830",
    "510600": "0838",
    "510700": "0816",
    "510800": "0839",
    "510900": "0825",
    "511000": "0832",
    "511100": "0833",
    "511300": "0817",
    "511400": "028",
    "511500": "0831",
    "511600": "0826",
    "511700": "0818",
    "511800": "0835",
    "511900": "0827",
    "512000": "028",
    "513200": "0837",
    "513300": "0836",
    "513400": "0834",
}

# Real institutions: (name, kind, city, instrument weight, share restricted)
KNOWN: list[tuple[str, str, str, int, float]] = [
    ("西南交通大学", "高校", "510100", 160, 0),
    ("西南财经大学", "高校", "510100", 15, 0),
    ("四川农业大学", "高校", "511800", 110, 0),
    ("西南石油大学", "高校", "510100", 110, 0),
    ("成都理工大学", "高校", "510100", 100, 0),
    ("西南科技大学", "高校", "510700", 110, 0),
    ("西华大学", "高校", "510100", 70, 0),
    ("成都信息工程大学", "高校", "510100", 60, 0),
    ("西南民族大学", "高校", "510100", 45, 0),
    ("四川师范大学", "高校", "510100", 55, 0),
    ("成都中医药大学", "高校", "510100", 70, 0),
    ("西南医科大学", "高校", "510500", 70, 0),
    ("川北医学院", "高校", "511300", 45, 0),
    ("西华师范大学", "高校", "511300", 40, 0),
    ("四川轻化工大学", "高校", "510300", 55, 0),
    ("乐山师范学院", "高校", "511100", 25, 0),
    ("宜宾学院", "高校", "511500", 30, 0),
    ("攀枝花学院", "高校", "510400", 30, 0),
    ("绵阳师范学院", "高校", "510700", 30, 0),
    ("内江师范学院", "高校", "511000", 25, 0),
    ("西昌学院", "高校", "513400", 20, 0),
    ("四川文理学院", "高校", "511700", 20, 0),
    ("成都大学", "高校", "510100", 55, 0),
    ("成都工业学院", "高校", "510100", 25, 0),
    ("阿坝师范学院", "高校", "513200", 10, 0),
    ("四川民族学院", "高校", "513300", 8, 0),
    ("中国工程物理研究院", "科研院所", "510700", 220, 0.12),
    ("中国空气动力研究与发展中心", "科研院所", "510700", 90, 0.1),
    ("中国科学院成都生物研究所", "科研院所", "510100", 90, 0),
    ("中国科学院光电技术研究所", "科研院所", "510100", 120, 0.05),
    ("中国科学院、水利部成都山地灾害与环境研究所", "科研院所", "510100", 50, 0),
    ("中国核动力研究设计院", "科研院所", "510100", 80, 0.08),
    ("核工业西南物理研究院", "科研院所", "510100", 60, 0.1),
    ("中国测试技术研究院", "科研院所", "510100", 70, 0),
    ("四川省分析测试服务中心", "科研院所", "510100", 60, 0),
    ("四川省农业科学院", "科研院所", "510100", 60, 0),
    ("四川省林业科学研究院", "科研院所", "510100", 25, 0),
    ("四川省中医药科学院", "科研院所", "510100", 30, 0),
    ("四川省食品发酵工业研究设计院", "科研院所", "510100", 20, 0),
    ("四川大学华西医院", "医疗机构", "510100", 150, 0),
    ("四川省人民医院", "医疗机构", "510100", 80, 0),
    ("成都市第一人民医院", "医疗机构", "510100", 30, 0),
    ("绵阳市中心医院", "医疗机构", "510700", 30, 0),
    ("西南医科大学附属医院", "医疗机构", "510500", 35, 0),
    ("川北医学院附属医院", "医疗机构", "511300", 30, 0),
    ("四川省肿瘤医院", "医疗机构", "510100", 40, 0),
    ("自贡市第一人民医院", "医疗机构", "510300", 15, 0),
    ("东方电气集团东方汽轮机有限公司", "企业", "510600", 40, 0),
    ("四川长虹电器股份有限公司", "企业", "510700", 45, 0),
    ("四川九洲电器集团有限责任公司", "企业", "510700", 35, 0.08),
    ("攀钢集团研究院有限公司", "企业", "510400", 40, 0),
    ("中国第二重型机械集团有限公司", "企业", "510600", 30, 0),
    ("四川科伦药业股份有限公司", "企业", "510100", 35, 0),
    ("天府兴隆湖实验室", "新型研发机构", "510100", 60, 0),
    ("天府绛溪实验室", "新型研发机构", "510100", 45, 0),
    ("天府锦城实验室", "新型研发机构", "510100", 40, 0),
    ("成都电子科大科技园中试平台", "中试平台", "510100", 25, 0),
]
KINDS_SYNTH = [
    ("企业", 55),
    ("中试平台", 10),
    ("新型研发机构", 8),
    ("科研院所", 12),
    ("医疗机构", 10),
    ("其他", 5),
]
WORDS = [
    "华",
    "蜀",
    "锦",
    "天",
    "川",
    "新",
    "瑞",
    "达",
    "睿",
    "博",
    "恒",
    "信",
    "诚",
    "弘",
    "创",
    "德",
    "宏",
    "安",
    "科",
    "联",
    "泰",
    "昊",
    "元",
    "星",
    "智",
    "芯",
    "源",
    "汇",
    "嘉",
    "鼎",
]
INDUSTRIES = {
    "企业": [
        "微电子科技有限公司",
        "生物医药有限公司",
        "新材料股份有限公司",
        "检测技术有限公司",
        "精密机械有限公司",
        "环保科技有限公司",
        "食品有限公司",
        "能源科技有限公司",
        "光电技术有限公司",
        "化工有限公司",
        "航空科技有限公司",
    ],
    "中试平台": ["中试基地", "产业技术中试平台", "成果转化中试平台"],
    "新型研发机构": ["产业技术研究院", "创新研究院", "技术研究院"],
    "科研院所": ["农业科学研究院", "检验检测研究院", "环境监测中心站", "地质调查研究院"],
    "医疗机构": ["人民医院", "中医医院", "妇幼保健院"],
    "其他": ["质量技术监督检验所", "公共检验检测中心"],
}
CITY_SHORT = {
    code: name.rstrip("市州").replace("藏族羌族自治", "").replace("藏族自治", "").replace("彝族自治", "")
    for code, name in CITIES.items()
}


@dataclass(frozen=True)
class Template:
    code: str
    name: str
    name_en: str
    models: tuple[tuple[str, str, str], ...]  # (manufacturer, model, country)
    low: int  # value range, 万元
    high: int
    weight: int
    functions: str
    subjects: tuple[str, ...]


T = Template
TEMPLATES: list[Template] = [
    T(
        "010200",
        "液相色谱-质谱联用仪",
        "LC-MS/MS",
        (
            ("安捷伦", "6495C", "US"),
            ("沃特世", "Xevo TQ-XS", "US"),
            ("赛默飞世尔", "TSQ Altis Plus", "US"),
            ("岛津", "LCMS-8060NX", "JP"),
            ("SCIEX", "Triple Quad 6500+", "US"),
        ),
        180,
        450,
        4,
        "小分子化合物定性定量分析，药物代谢、农残兽残与环境污染物痕量检测",
        ("150", "350"),
    ),
    T(
        "010200",
        "高分辨质谱仪",
        "High-resolution mass spectrometer",
        (
            ("赛默飞世尔", "Orbitrap Exploris 480", "US"),
            ("布鲁克", "timsTOF Pro 2", "DE"),
            ("沃特世", "Xevo G3 QTof", "US"),
        ),
        300,
        800,
        2,
        "蛋白质组学、代谢组学与未知物鉴定，精确质量数测定",
        ("180", "150"),
    ),
    T(
        "010200",
        "气相色谱-质谱联用仪",
        "GC-MS",
        (
            ("安捷伦", "7000E", "US"),
            ("岛津", "GCMS-QP2020 NX", "JP"),
            ("赛默飞世尔", "TSQ 9610", "US"),
            ("禾信仪器", "GCMS 1000", "CN"),
        ),
        60,
        200,
        4,
        "挥发性与半挥发性有机物定性定量分析",
        ("150", "610"),
    ),
    T(
        "010200",
        "电感耦合等离子体质谱仪",
        "ICP-MS",
        (
            ("安捷伦", "7900", "US"),
            ("赛默飞世尔", "iCAP RQ", "US"),
            ("珀金埃尔默", "NexION 2000", "US"),
            ("钢研纳克", "Plasma MS 300", "CN"),
        ),
        100,
        300,
        3,
        "痕量与超痕量元素及同位素分析",
        ("150", "170"),
    ),
    T(
        "010200",
        "基质辅助激光解吸电离飞行时间质谱仪",
        "MALDI-TOF MS",
        (("布鲁克", "rapifleX", "DE"), ("岛津", "MALDI-8020", "JP")),
        150,
        400,
        1,
        "生物大分子分子量测定、微生物鉴定与组织成像",
        ("180", "310"),
    ),
    T(
        "010200",
        "稳定同位素比质谱仪",
        "IRMS",
        (("赛默飞世尔", "253 Plus", "US"), ("Elementar", "isoprime precisION", "DE")),
        200,
        500,
        1,
        "C、H、O、N、S 稳定同位素比值测定，地球化学与食品溯源",
        ("170", "550"),
    ),
    T(
        "010101",
        "透射电子显微镜",
        "TEM",
        (("赛默飞世尔", "Talos F200X G2", "US"), ("日本电子", "JEM-F200", "JP"), ("日立", "HT7800", "JP")),
        500,
        1800,
        2,
        "材料微观结构、晶体缺陷与界面原子尺度表征",
        ("430", "140"),
    ),
    T(
        "010102",
        "场发射扫描电子显微镜",
        "FE-SEM",
        (
            ("蔡司", "Sigma 360", "DE"),
            ("日立", "SU8600", "JP"),
            ("赛默飞世尔", "Apreo 2", "US"),
            ("日本电子", "JSM-IT800", "JP"),
            ("国仪量子", "SEM5000", "CN"),
        ),
        150,
        600,
        5,
        "样品表面形貌观察与能谱元素分析",
        ("430", "170"),
    ),
    T(
        "010102",
        "台式扫描电子显微镜",
        "Tabletop SEM",
        (("日立", "TM4000Plus II", "JP"), ("飞纳", "Phenom XL G2", "NL")),
        40,
        90,
        2,
        "快速表面形貌观察",
        ("430",),
    ),
    T(
        "010300",
        "X射线衍射仪",
        "XRD",
        (
            ("布鲁克", "D8 Advance", "DE"),
            ("理学", "SmartLab", "JP"),
            ("马尔文帕纳科", "Empyrean", "NL"),
            ("丹东浩元", "DX-2700BH", "CN"),
        ),
        60,
        300,
        5,
        "物相定性定量分析、晶粒尺寸与残余应力测定",
        ("430", "150"),
    ),
    T(
        "010300",
        "X射线光电子能谱仪",
        "XPS",
        (("赛默飞世尔", "ESCALAB QXi", "US"), ("岛津/Kratos", "AXIS SUPRA+", "GB")),
        400,
        900,
        1,
        "材料表面元素组成与化学态分析",
        ("430", "150"),
    ),
    T(
        "010300",
        "X射线荧光光谱仪",
        "XRF",
        (("马尔文帕纳科", "Zetium", "NL"), ("岛津", "XRF-1800", "JP")),
        60,
        200,
        2,
        "固体与粉末样品主次量元素无损分析",
        ("170", "450"),
    ),
    T(
        "010400",
        "傅里叶变换红外光谱仪",
        "FTIR",
        (("赛默飞世尔", "Nicolet iS50", "US"), ("布鲁克", "INVENIO S", "DE"), ("岛津", "IRTracer-100", "JP")),
        20,
        90,
        6,
        "有机官能团鉴定、聚合物与药物成分分析",
        ("150",),
    ),
    T(
        "010400",
        "紫外可见分光光度计",
        "UV-Vis spectrophotometer",
        (("岛津", "UV-2600i", "JP"), ("安捷伦", "Cary 60", "US"), ("普析通用", "TU-1950", "CN")),
        5,
        30,
        8,
        "溶液吸光度测定与定量分析",
        ("150", "180"),
    ),
    T(
        "010400",
        "激光共聚焦拉曼光谱仪",
        "Raman spectrometer",
        (("雷尼绍", "inVia Qontor", "GB"), ("堀场", "LabRAM HR Evolution", "FR")),
        80,
        250,
        3,
        "分子结构与晶型鉴别、碳材料与二维材料表征",
        ("150", "430"),
    ),
    T(
        "010400",
        "电感耦合等离子体发射光谱仪",
        "ICP-OES",
        (("安捷伦", "5900", "US"), ("赛默飞世尔", "iCAP PRO", "US"), ("珀金埃尔默", "Avio 550 Max", "US")),
        40,
        120,
        4,
        "多元素同时测定",
        ("150", "610"),
    ),
    T(
        "010400",
        "原子吸收光谱仪",
        "AAS",
        (("珀金埃尔默", "PinAAcle 900T", "US"), ("北京东西分析", "AA-7050", "CN")),
        15,
        60,
        4,
        "金属元素定量分析",
        ("150", "550"),
    ),
    T(
        "010400",
        "稳态瞬态荧光光谱仪",
        "Fluorescence spectrometer",
        (("爱丁堡", "FLS1000", "GB"), ("堀场", "FluoroMax-4", "FR")),
        60,
        180,
        2,
        "荧光光谱、寿命与量子产率测定",
        ("140", "150"),
    ),
    T(
        "010500",
        "高效液相色谱仪",
        "HPLC",
        (
            ("安捷伦", "1260 Infinity II", "US"),
            ("沃特世", "Arc HPLC", "US"),
            ("岛津", "LC-2050C", "JP"),
            ("依利特", "P1201", "CN"),
        ),
        20,
        70,
        9,
        "有机化合物分离与定量分析",
        ("150", "350"),
    ),
    T(
        "010500",
        "超高效液相色谱仪",
        "UHPLC",
        (("沃特世", "ACQUITY UPLC H-Class PLUS", "US"), ("赛默飞世尔", "Vanquish Core", "US")),
        50,
        120,
        3,
        "快速高分离度色谱分析",
        ("150", "350"),
    ),
    T(
        "010500",
        "气相色谱仪",
        "GC",
        (("安捷伦", "8890", "US"), ("岛津", "GC-2030", "JP"), ("福立", "GC9790Plus", "CN")),
        15,
        50,
        7,
        "挥发性组分分离与定量",
        ("150", "610"),
    ),
    T(
        "010500",
        "离子色谱仪",
        "Ion chromatograph",
        (("赛默飞世尔", "ICS-6000", "US"), ("瑞士万通", "940 Professional IC", "CH")),
        30,
        80,
        3,
        "阴阳离子分析",
        ("150", "610"),
    ),
    T(
        "010600",
        "核磁共振波谱仪",
        "NMR spectrometer",
        (
            ("布鲁克", "AVANCE NEO 600", "DE"),
            ("布鲁克", "AVANCE III HD 400", "DE"),
            ("日本电子", "JNM-ECZ500R", "JP"),
        ),
        300,
        1500,
        3,
        "有机分子结构解析、固体核磁与动力学研究",
        ("150", "180"),
    ),
    T(
        "010600",
        "电子顺磁共振波谱仪",
        "EPR spectrometer",
        (("布鲁克", "EMXplus", "DE"), ("国仪量子", "EPR200M", "CN")),
        150,
        400,
        1,
        "自由基与过渡金属离子检测",
        ("150", "140"),
    ),
    T(
        "010700",
        "电化学工作站",
        "Electrochemical workstation",
        (
            ("上海辰华", "CHI760E", "CN"),
            ("阿美特克", "VersaSTAT 4", "US"),
            ("瑞士万通", "Autolab PGSTAT302N", "CH"),
        ),
        5,
        40,
        6,
        "循环伏安、阻抗谱与电池材料电化学测试",
        ("150", "480"),
    ),
    T(
        "010800",
        "激光扫描共聚焦显微镜",
        "Confocal microscope",
        (
            ("蔡司", "LSM 980", "DE"),
            ("徕卡", "STELLARIS 5", "DE"),
            ("尼康", "AX R", "JP"),
            ("奥林巴斯", "FV4000", "JP"),
        ),
        150,
        600,
        4,
        "细胞与组织三维荧光成像、活细胞成像",
        ("180", "310"),
    ),
    T(
        "010800",
        "原子力显微镜",
        "AFM",
        (("布鲁克", "Dimension Icon", "US"), ("牛津仪器", "Cypher ES", "GB"), ("本原纳米", "CSPM5500", "CN")),
        60,
        300,
        3,
        "纳米尺度表面形貌与力学、电学性质测量",
        ("430", "140"),
    ),
    T(
        "010800",
        "倒置荧光显微镜",
        "Inverted fluorescence microscope",
        (("奥林巴斯", "IX83", "JP"), ("尼康", "Ti2-E", "JP")),
        20,
        60,
        5,
        "细胞荧光观察与拍照",
        ("180",),
    ),
    T(
        "010900",
        "同步热分析仪",
        "STA",
        (("耐驰", "STA 449 F5", "DE"), ("梅特勒-托利多", "TGA/DSC 3+", "CH")),
        40,
        120,
        4,
        "热重与差热同步测定，材料热稳定性分析",
        ("430", "150"),
    ),
    T(
        "010900",
        "差示扫描量热仪",
        "DSC",
        (("TA仪器", "DSC 2500", "US"), ("耐驰", "DSC 214 Polyma", "DE")),
        25,
        80,
        4,
        "玻璃化转变、熔融与结晶行为测定",
        ("430",),
    ),
    T(
        "011000",
        "流式细胞仪",
        "Flow cytometer",
        (("贝克曼库尔特", "CytoFLEX S", "US"), ("BD", "FACSCelesta", "US"), ("BD", "FACSAria III", "US")),
        80,
        500,
        4,
        "细胞表型分析与分选",
        ("180", "310"),
    ),
    T(
        "011000",
        "超速离心机",
        "Ultracentrifuge",
        (("贝克曼库尔特", "Optima XPN-100", "US"), ("日立", "CP100NX", "JP")),
        60,
        120,
        3,
        "亚细胞组分、病毒与核酸的超速分离",
        ("180",),
    ),
    T(
        "011000",
        "实时荧光定量PCR仪",
        "qPCR",
        (
            ("伯乐", "CFX96 Touch", "US"),
            ("赛默飞世尔", "QuantStudio 5", "US"),
            ("宏石医疗", "SLAN-96S", "CN"),
        ),
        15,
        45,
        6,
        "基因表达定量与病原体检测",
        ("180", "310"),
    ),
    T(
        "011000",
        "高通量测序仪",
        "Sequencer",
        (("Illumina", "NovaSeq X", "US"), ("华大智造", "DNBSEQ-T7", "CN")),
        300,
        1200,
        1,
        "基因组、转录组测序",
        ("180", "310"),
    ),
    T(
        "011100",
        "总有机碳分析仪",
        "TOC analyzer",
        (("岛津", "TOC-L CPH", "JP"), ("Elementar", "vario TOC cube", "DE")),
        20,
        60,
        3,
        "水样总有机碳测定",
        ("610",),
    ),
    T(
        "011100",
        "元素分析仪",
        "Elemental analyzer",
        (("Elementar", "vario EL cube", "DE"), ("赛默飞世尔", "FlashSmart", "US")),
        40,
        100,
        3,
        "C、H、N、S、O 元素含量测定",
        ("150",),
    ),
    T(
        "011200",
        "微波消解仪",
        "Microwave digestion system",
        (("CEM", "MARS 6", "US"), ("上海新仪", "MDS-15", "CN")),
        10,
        40,
        4,
        "样品微波消解前处理",
        ("150",),
    ),
    T(
        "020000",
        "电子万能材料试验机",
        "Universal testing machine",
        (("英斯特朗", "5982", "US"), ("美特斯", "CMT5105", "CN"), ("岛津", "AGX-V", "JP")),
        30,
        150,
        6,
        "材料拉伸、压缩、弯曲力学性能测试",
        ("430", "460"),
    ),
    T(
        "020000",
        "比表面及孔径分析仪",
        "BET analyzer",
        (("麦克默瑞提克", "ASAP 2460", "US"), ("安东帕康塔", "Autosorb iQ", "AT")),
        30,
        90,
        4,
        "比表面积与孔径分布测定",
        ("430", "150"),
    ),
    T(
        "020000",
        "激光粒度分析仪",
        "Laser diffraction particle sizer",
        (("马尔文帕纳科", "Mastersizer 3000", "GB"), ("丹东百特", "Bettersize 2600", "CN")),
        20,
        70,
        3,
        "粉体与乳液粒径分布测定",
        ("430",),
    ),
    T(
        "030000",
        "三坐标测量机",
        "CMM",
        (("海克斯康", "Global S", "SE"), ("蔡司", "CONTURA", "DE")),
        80,
        300,
        3,
        "复杂零件几何尺寸与形位公差精密测量",
        ("460",),
    ),
    T(
        "030000",
        "激光干涉仪",
        "Laser interferometer",
        (("雷尼绍", "XL-80", "GB"),),
        30,
        60,
        2,
        "机床与导轨精度校准",
        ("460",),
    ),
    T(
        "040000",
        "矢量网络分析仪",
        "Vector network analyzer",
        (("是德科技", "N5227B", "US"), ("罗德与施瓦茨", "ZNA43", "DE"), ("中电科思仪", "3672E", "CN")),
        80,
        500,
        4,
        "微波器件与天线S参数测试",
        ("510",),
    ),
    T(
        "040000",
        "信号与频谱分析仪",
        "Signal analyzer",
        (("是德科技", "N9040B UXA", "US"), ("罗德与施瓦茨", "FSW43", "DE")),
        60,
        300,
        3,
        "射频信号频谱与调制分析",
        ("510",),
    ),
    T(
        "040000",
        "高带宽数字示波器",
        "Oscilloscope",
        (("是德科技", "UXR0334A", "US"), ("泰克", "MSO64B", "US")),
        30,
        600,
        4,
        "高速信号时域测量与眼图分析",
        ("510",),
    ),
    T(
        "040000",
        "半导体参数分析仪",
        "Semiconductor parameter analyzer",
        (("是德科技", "B1500A", "US"),),
        80,
        200,
        2,
        "器件I-V/C-V特性测试",
        ("510", "430"),
    ),
    T(
        "050000",
        "多参数水质分析仪",
        "Multiparameter sonde",
        (("YSI", "EXO2", "US"),),
        15,
        40,
        1,
        "水体温盐深、溶解氧与叶绿素原位监测",
        ("610",),
    ),
    T(
        "060000",
        "探地雷达",
        "Ground penetrating radar",
        (("MALA", "ProEx", "SE"), ("中国电波传播研究所", "LTD-2600", "CN")),
        30,
        100,
        2,
        "浅层地质结构与隐患探测",
        ("170",),
    ),
    T(
        "060000",
        "宽频带地震仪",
        "Broadband seismometer",
        (("Nanometrics", "Trillium 120", "CA"), ("珠海泰德", "TDV-60B", "CN")),
        20,
        60,
        2,
        "地震与地脉动观测",
        ("170",),
    ),
    T(
        "070000",
        "气溶胶激光雷达",
        "Aerosol lidar",
        (("无锡中科光电", "AGHJ-I-LIDAR", "CN"),),
        100,
        300,
        1,
        "大气气溶胶与边界层垂直结构探测",
        ("170", "610"),
    ),
    T(
        "070000",
        "单颗粒气溶胶质谱仪",
        "Single particle aerosol mass spectrometer",
        (("禾信仪器", "SPAMS 0525", "CN"),),
        200,
        400,
        1,
        "大气颗粒物来源解析与在线监测",
        ("610", "170"),
    ),
    T(
        "080000",
        "光学望远镜",
        "Optical telescope",
        (("南京天文光学技术研究所", "1米级光学望远镜", "CN"),),
        200,
        800,
        1,
        "天体测光与光谱观测",
        ("160",),
    ),
    T(
        "090000",
        "磁共振成像系统",
        "MRI system",
        (
            ("西门子医疗", "MAGNETOM Prisma 3T", "DE"),
            ("GE医疗", "SIGNA Premier", "US"),
            ("联影医疗", "uMR 790", "CN"),
        ),
        1500,
        3000,
        2,
        "脑功能成像与临床科研影像",
        ("320", "310"),
    ),
    T(
        "090000",
        "计算机断层扫描系统",
        "CT system",
        (("西门子医疗", "SOMATOM Force", "DE"), ("联影医疗", "uCT 960+", "CN")),
        800,
        2500,
        2,
        "临床与科研断层成像",
        ("320",),
    ),
    T(
        "090000",
        "彩色多普勒超声诊断仪",
        "Ultrasound system",
        (("迈瑞医疗", "Resona R9", "CN"), ("GE医疗", "LOGIQ E20", "US")),
        80,
        300,
        3,
        "超声影像诊断与科研",
        ("320",),
    ),
    T(
        "090000",
        "小动物活体成像系统",
        "In vivo imaging system",
        (("珀金埃尔默", "IVIS Spectrum", "US"),),
        150,
        300,
        1,
        "小动物荧光与生物发光活体成像",
        ("180", "310"),
    ),
    T(
        "100000",
        "高纯锗γ能谱仪",
        "HPGe gamma spectrometer",
        (("ORTEC", "GEM-C5970", "US"), ("Mirion", "BE6530", "US")),
        60,
        150,
        2,
        "放射性核素识别与活度测量",
        ("490",),
    ),
    T(
        "100000",
        "液体闪烁计数器",
        "Liquid scintillation counter",
        (("珀金埃尔默", "Tri-Carb 4910TR", "US"),),
        50,
        100,
        1,
        "低能β放射性测量",
        ("490",),
    ),
    T(
        "110000",
        "工业CT",
        "Industrial CT",
        (("蔡司", "METROTOM 1500", "DE"), ("日联科技", "CT-450", "CN")),
        200,
        800,
        2,
        "构件内部缺陷无损检测与三维重构",
        ("460", "430"),
    ),
    T(
        "110000",
        "相控阵超声检测仪",
        "Phased array UT",
        (("奥林巴斯", "OmniScan X3", "JP"),),
        20,
        60,
        2,
        "焊缝与构件超声探伤",
        ("460",),
    ),
    T(
        "120000",
        "金属3D打印机",
        "Metal additive manufacturing system",
        (("EOS", "M 290", "DE"), ("铂力特", "BLT-S310", "CN")),
        300,
        900,
        2,
        "金属零件增材制造与工艺研究",
        ("460", "430"),
    ),
    T(
        "120000",
        "磁控溅射镀膜系统",
        "Magnetron sputtering system",
        (("沈阳科仪", "JGP-560", "CN"), ("AJA", "ATC Orion 8", "US")),
        50,
        300,
        3,
        "金属与化合物薄膜制备",
        ("430", "510"),
    ),
    T(
        "120000",
        "紫外光刻机",
        "Mask aligner",
        (("SUSS MicroTec", "MA6 Gen4", "DE"),),
        200,
        500,
        1,
        "微纳器件图形化光刻",
        ("510",),
    ),
    T(
        "120000",
        "反应离子刻蚀机",
        "Reactive ion etcher",
        (("牛津仪器", "PlasmaPro 100", "GB"), ("北方华创", "NMC 612D", "CN")),
        150,
        500,
        1,
        "微纳结构干法刻蚀",
        ("510",),
    ),
    T(
        "130000",
        "高性能计算集群",
        "HPC cluster",
        (("中科曙光", "TC6600", "CN"), ("浪潮", "NF5488A5", "CN")),
        200,
        1500,
        2,
        "大规模科学计算与人工智能训练",
        ("520",),
    ),
    T(
        "130000",
        "GPU计算服务器",
        "GPU server",
        (("浪潮", "NF5468M6", "CN"), ("华为", "Atlas 800", "CN")),
        30,
        200,
        4,
        "深度学习与数值模拟",
        ("520",),
    ),
    T(
        "140000",
        "飞秒激光器",
        "Femtosecond laser",
        (("相干", "Astrella", "US"), ("光谱物理", "Spitfire Ace", "US")),
        150,
        600,
        2,
        "超快光谱、飞秒加工与非线性光学研究",
        ("140",),
    ),
    T(
        "140000",
        "可调谐连续激光器",
        "Tunable CW laser",
        (("Toptica", "DL pro", "DE"), ("M Squared", "SolsTiS", "GB")),
        40,
        150,
        2,
        "高分辨光谱与量子光学实验",
        ("140",),
    ),
    T(
        "990000",
        "人工气候箱",
        "Climate chamber",
        (("宁波赛福", "PRX-1000B", "CN"), ("伯丁", "BIC-400", "CN")),
        3,
        15,
        4,
        "植物培养与环境模拟",
        ("210",),
    ),
    T(
        "990000",
        "超纯水系统",
        "Ultrapure water system",
        (("默克密理博", "Milli-Q IQ 7000", "DE"), ("优普", "UPR-II", "CN")),
        3,
        10,
        3,
        "实验室超纯水制备",
        ("150",),
    ),
]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈姚卢"
)
ROMAN = {
    "王": "wang",
    "李": "li",
    "张": "zhang",
    "刘": "liu",
    "陈": "chen",
    "杨": "yang",
    "黄": "huang",
    "赵": "zhao",
}


def _pick(rng: random.Random, weighted: dict[str, int] | list[tuple[str, int]]) -> str:
    items = list(weighted.items()) if isinstance(weighted, dict) else weighted
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


@dataclass
class InstitutionSpec:
    name: str
    kind: str
    city: str
    weight: int
    restricted_share: float = 0.0
    id: int | None = None


def plan_institutions(
    rng: random.Random, existing: dict[str, Institution], total: int = 300
) -> list[InstitutionSpec]:
    specs = [
        InstitutionSpec(name, kind, city, weight, share)
        for name, kind, city, weight, share in KNOWN
        if name not in existing
    ]
    names = {s.name for s in specs} | set(existing)
    while len(specs) + len(existing) < total:
        kind = _pick(rng, KINDS_SYNTH)
        city = _pick(rng, CITY_WEIGHTS)
        name = f"{CITY_SHORT[city]}{rng.choice(WORDS)}{rng.choice(WORDS)}{rng.choice(INDUSTRIES[kind])}"
        if kind == "医疗机构":
            name = f"{CITIES[city]}{rng.choice(['第二', '第三', '第四', ''])}{rng.choice(INDUSTRIES[kind])}"
        if name in names:
            continue
        names.add(name)
        weight = {"企业": 12, "中试平台": 20, "新型研发机构": 25, "科研院所": 25, "医疗机构": 20, "其他": 15}[
            kind
        ]
        specs.append(InstitutionSpec(name, kind, city, rng.randint(weight // 2, weight * 2)))
    return specs


def _value(rng: random.Random, t: Template) -> Decimal:
    wan = rng.uniform(t.low, t.high)
    cny = Decimal(int(wan * 10000 / 100) * 100 + rng.choice([0, 0, 0, 50]))
    return cny.quantize(Decimal("0.01"))


def instrument_rows(
    rng: random.Random,
    inst: InstitutionSpec,
    count: int,
    start_seq: int,
    facility_ids: list[int],
    address: str | None,
    chain_ids: list[int],
    today: date,
) -> tuple[list[tuple[Any, ...]], list[list[int]]]:
    rows: list[tuple[Any, ...]] = []
    chains: list[list[int]] = []
    weights = [t.weight for t in TEMPLATES]
    for k in range(count):
        t = rng.choices(TEMPLATES, weights=weights)[0]
        manufacturer, model, country = rng.choice(t.models)
        value = _value(rng, t)
        start = today - timedelta(days=rng.randint(200, 365 * 18))
        mode = _pick(rng, {"external": 55, "internal": 30, "none": 15})
        status = _pick(
            rng,
            {
                "normal": 74,
                "standby": 8,
                "remote": 3,
                "occasional_fault": 6,
                "frequent_fault": 2,
                "awaiting_repair": 4,
                "awaiting_scrap": 3,
            },
        )
        surname = rng.choice(SURNAMES)
        phone = f"{AREA_CODES[inst.city]}-{rng.randint(2000000, 8999999) if AREA_CODES[inst.city] != '028' else rng.randint(60000000, 89999999)}"
        hourly = int(float(value) / 10000 * rng.uniform(0.6, 1.6)) // 10 * 10 + 50
        fee_unit = None if mode == "none" else rng.choice(["hour", "hour", "sample", "use"])
        fee_internal = Decimal(hourly) if fee_unit else None
        fee_external = (
            Decimal(int(hourly * rng.choice([1.5, 2, 2.5]))) if fee_unit and mode == "external" else None
        )
        fee_minimum = Decimal(hourly // 2) if fee_unit and rng.random() < 0.4 else None
        large = value >= Decimal(500000)
        restricted = inst.restricted_share > 0 and rng.random() < inst.restricted_share
        rows.append(
            (
                inst.id,
                rng.choice(facility_ids) if facility_ids else None,
                f"{start.year}{start_seq + k:06d}",
                t.name,
                t.name_en,
                t.code,
                _pick(rng, {"purchased": 88, "developed": 6, "donated": 3, "other": 3}),
                "general" if rng.random() < 0.8 else "special",
                value,
                country,
                model,
                manufacturer,
                start,
                f"{model}：{t.name_en}，关键指标详见厂家技术规格书；已通过计量检定/校准。",
                t.functions,
                list(t.subjects),
                "委托测试、技术培训与自主上机" if mode != "none" else "仅供本单位科研使用",
                f"依据《四川省重大科研基础设施和大型科研仪器开放共享管理办法》对外开放，预约后{rng.choice([1, 2, 3])}个工作日内安排。"
                if mode == "external"
                else None,
                f"校内 {hourly} 元/{'小时' if fee_unit == 'hour' else '样' if fee_unit == 'sample' else '次'}"
                if fee_unit
                else None,
                inst.city,
                address,
                f"{surname}老师",
                phone,
                f"{ROMAN.get(surname, 'lab')}{rng.randint(10, 999)}@example.cn",
                mode,
                status,
                _pick(rng, {"central": 40, "local": 25, "own": 30, "other": 5}),
                rng.choice(["分析测试中心", "实验室与设备管理处", "资产管理处", "中心实验室", None]),
                "supervised" if country != "CN" and rng.random() < 0.1 else "none",
                fee_unit,
                fee_internal,
                fee_external,
                fee_minimum,
                large and rng.random() < 0.3,
                mode == "external" and rng.random() < 0.45,
                restricted,
            )
        )
        chosen = rng.sample(chain_ids, k=rng.choice([0, 0, 1, 1, 2])) if chain_ids else []
        chains.append(chosen)
    return rows, chains


COLUMNS = (
    "institution_id",
    "facility_id",
    "asset_number",
    "name",
    "name_en",
    "category_code",
    "source",
    "usage_kind",
    "original_value",
    "country_code",
    "model",
    "manufacturer",
    "start_date",
    "specs",
    "functions",
    "subjects",
    "service_content",
    "sharing_rules",
    "fee_text",
    "city_code",
    "street",
    "contact_name",
    "contact_phone",
    "contact_email",
    "sharing_mode",
    "status",
    "funding_source",
    "department",
    "customs_status",
    "fee_unit",
    "fee_internal",
    "fee_external",
    "fee_minimum",
    "qualification_required",
    "accepts_vouchers",
    "restricted",
)

Progress = Callable[[str, int, int], None]


async def seed_province(
    session: AsyncSession,
    *,
    today: date,
    progress: Progress | None = None,
    target: int = TARGET_INSTRUMENTS,
    seed: int = SEED,
) -> dict[str, int]:
    """Add the demo province beside whatever institutions exist (the demo accounts' universities keep their
    names and get instruments too). Returns counts."""
    rng = random.Random(seed)
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    pg = raw.driver_connection  # asyncpg, for COPY
    assert pg is not None
    existing = {i.name: i for i in (await session.scalars(select(Institution))).all()}
    specs = plan_institutions(rng, existing)
    if progress:
        progress("单位", 0, len(specs))
    await pg.copy_records_to_table(
        "institutions",
        records=[
            (
                s.name,
                s.kind,
                s.city,
                f"{CITIES[s.city]}{rng.choice(WORDS)}{rng.choice(WORDS)}路{rng.randint(1, 300)}号",
            )
            for s in specs
        ],
        columns=["name", "kind", "city_code", "address"],
    )
    if progress:
        progress("单位", len(specs), len(specs))
    ids = {
        name: iid for iid, name in (await session.execute(text("SELECT id, name FROM institutions"))).all()
    }
    for s in specs:
        s.id = ids[s.name]
    # The demo accounts' institutions: 四川大学 is the manager's and gets a large, realistic park.
    weights = {"四川大学": 320, "电子科技大学": 200}
    for name, inst in existing.items():
        specs.append(InstitutionSpec(name, inst.kind, inst.city_code, weights.get(name, 60), 0.0, inst.id))
    facilities: dict[int, list[int]] = {}
    scu = existing.get("四川大学")
    if scu is not None:
        for fname, desc in (
            ("华西药学院药物分析平台", "药物分析与质谱平台"),
            ("高分子材料工程国家重点实验室", "材料表征"),
            ("生命科学学院公共仪器平台", "细胞与分子生物学"),
        ):
            session.add(Facility(institution_id=scu.id, name=fname, description=desc))  # type: ignore[arg-type]
        await session.flush()
    for fid, iid in (await session.execute(text("SELECT id, institution_id FROM facilities"))).all():
        facilities.setdefault(iid, []).append(fid)
    chain_ids = [cid for (cid,) in (await session.execute(text("SELECT id FROM chains ORDER BY id"))).all()]
    addresses = {
        iid: addr for iid, addr in (await session.execute(text("SELECT id, address FROM institutions"))).all()
    }
    total_weight = sum(s.weight for s in specs)
    counts = [max(3, round(target * s.weight / total_weight)) for s in specs]
    planned = sum(counts)
    done = 0
    seq = 1
    buffer: list[tuple[Any, ...]] = []
    link_plan: list[tuple[int, str, list[int]]] = []
    for spec, count in zip(specs, counts, strict=True):
        assert spec.id is not None
        rows, chains = instrument_rows(
            rng, spec, count, seq, facilities.get(spec.id, []), addresses.get(spec.id), chain_ids, today
        )
        seq += count
        buffer += rows
        link_plan += [(spec.id, r[2], c) for r, c in zip(rows, chains, strict=True) if c]
        if len(buffer) >= 2000:
            await pg.copy_records_to_table("instruments", records=buffer, columns=list(COLUMNS))
            done += len(buffer)
            buffer = []
            if progress:
                progress("仪器", done, planned)
    if buffer:
        await pg.copy_records_to_table("instruments", records=buffer, columns=list(COLUMNS))
        done += len(buffer)
    if progress:
        progress("仪器", done, planned)
    key_to_id = {
        (iid, asset): i
        for i, iid, asset in await pg.fetch("SELECT id, institution_id, asset_number FROM instruments")
    }
    links = [(key_to_id[(iid, asset)], c) for iid, asset, cs in link_plan for c in cs]
    await pg.copy_records_to_table("instrument_chains", records=links, columns=["instrument_id", "chain_id"])
    await session.execute(
        text(
            "INSERT INTO instrument_history (instrument_id, valid_from, sharing_mode, status, original_value,"
            " institution_id, city_code) SELECT i.id, now(), i.sharing_mode, i.status, i.original_value,"
            " i.institution_id, i.city_code FROM instruments i WHERE NOT EXISTS"
            " (SELECT 1 FROM instrument_history h WHERE h.instrument_id = i.id AND h.valid_to IS NULL)"
        )
    )
    # The terms common enough to need kept postings and counts (the job would find them too, within six hours).
    await promote_frequent_terms(session)
    # Fresh statistics for the planner (the search tables were filled by the triggers, batch by batch).
    for table in (
        "instruments",
        "instrument_search",
        "instrument_facet_counts",
        "search_term_postings",
        "search_term_counts",
        "search_term_chain_counts",
        "search_term_marginals",
    ):
        await session.execute(text(f"ANALYZE {table}"))
    result = {"institutions": len(specs), "instruments": done, "chain_links": len(links)}
    record(session, actor_id=None, action="demo.seeded", target_type="catalogue", after=result)
    await session.flush()
    return result
