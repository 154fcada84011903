"""Reference lists the catalogue shows and validates against: countries of origin (GB/T 2659 two-letter codes)
and the first-level subject fields of GB/T 13745.

Only the countries instruments in the province plausibly come from are listed; an unlisted origin is recorded as
another known code or left blank, and the list is easy to extend.
"""

from __future__ import annotations

COUNTRIES: dict[str, str] = {
    "CN": "中国",
    "US": "美国",
    "DE": "德国",
    "JP": "日本",
    "GB": "英国",
    "FR": "法国",
    "CH": "瑞士",
    "NL": "荷兰",
    "SE": "瑞典",
    "IT": "意大利",
    "KR": "韩国",
    "AU": "澳大利亚",
    "CA": "加拿大",
    "AT": "奥地利",
    "BE": "比利时",
    "DK": "丹麦",
    "FI": "芬兰",
    "NO": "挪威",
    "IE": "爱尔兰",
    "IL": "以色列",
    "IN": "印度",
    "RU": "俄罗斯",
    "SG": "新加坡",
    "CZ": "捷克",
    "PL": "波兰",
    "ES": "西班牙",
    "HU": "匈牙利",
    "NZ": "新西兰",
    "BR": "巴西",
    "HK": "中国香港",
    "TW": "中国台湾",
    "MY": "马来西亚",
    "SI": "斯洛文尼亚",
    "LI": "列支敦士登",
    "LU": "卢森堡",
    "PT": "葡萄牙",
    "UA": "乌克兰",
    "BY": "白俄罗斯",
    "TH": "泰国",
    "ZA": "南非",
}

# GB/T 13745 一级学科 (3-digit codes). Second and third levels extend the code by two digits each.
SUBJECTS: dict[str, str] = {
    "110": "数学",
    "120": "信息科学与系统科学",
    "130": "力学",
    "140": "物理学",
    "150": "化学",
    "160": "天文学",
    "170": "地球科学",
    "180": "生物学",
    "190": "心理学",
    "210": "农学",
    "220": "林学",
    "230": "畜牧、兽医科学",
    "240": "水产学",
    "310": "基础医学",
    "320": "临床医学",
    "330": "预防医学与公共卫生学",
    "340": "军事医学与特种医学",
    "350": "药学",
    "360": "中医学与中药学",
    "410": "工程与技术科学基础学科",
    "413": "信息与系统科学相关工程与技术",
    "416": "自然科学相关工程与技术",
    "420": "测绘科学技术",
    "430": "材料科学",
    "440": "矿山工程技术",
    "450": "冶金工程技术",
    "460": "机械工程",
    "470": "动力与电气工程",
    "480": "能源科学技术",
    "490": "核科学技术",
    "510": "电子与通信技术",
    "520": "计算机科学技术",
    "530": "化学工程",
    "535": "产品应用相关工程与技术",
    "540": "纺织科学技术",
    "550": "食品科学技术",
    "560": "土木建筑工程",
    "570": "水利工程",
    "580": "交通运输工程",
    "590": "航空、航天科学技术",
    "610": "环境科学技术及资源科学技术",
    "620": "安全科学技术",
    "630": "管理学",
}


def country_name(code: str | None) -> str:
    return COUNTRIES.get(code or "", code or "")


def subject_name(code: str) -> str:
    name = SUBJECTS.get(code[:3])
    if name is None:
        return code
    return name if len(code) == 3 else f"{name}（{code}）"
