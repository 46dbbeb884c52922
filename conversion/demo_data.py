"""Seeded generator of DuIE-style Chinese sentences with known entities and SPO triples.

Names of every entity type are synthesized from character/word pools and split by a stable hash
into disjoint train and test pools, so the test split only holds names never seen in training.
A dev split, drawn from the test pool by its own random stream, is what trainers watch to decide
when to stop, so the test split's figure is not picked by looking at it.
Records: ``{"text", "spo_list": [{subject, subject_type, subject_start, predicate, object,
object_type, object_start}], "entities": [{text, type, start, end}]}`` (char offsets, end
exclusive).
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
import zlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.tokenizer import build_vocab

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predicate:
    """A relation with fixed subject and object entity types."""

    name: str
    subject_type: str
    object_type: str


ENTITY_TYPES: list[str] = [
    "人物",
    "地点",
    "国家",
    "机构",
    "学校",
    "公司",
    "作品",
    "影视作品",
    "歌曲",
    "日期",
    "职业",
]

# name, subject_type, object_type, full templates ({s}, {o}), subject-elided clauses ({o})
_PRED_SPECS: list[tuple[str, str, str, list[str], list[str]]] = [
    (
        "出生地",
        "人物",
        "地点",
        ["{s}出生于{o}。", "{s}是{o}人。", "{o}是{s}的出生地。", "{s}的出生地是{o}。", "{s}生于{o}。"],
        ["出生于{o}", "{o}人", "生于{o}"],
    ),
    (
        "出生日期",
        "人物",
        "日期",
        ["{s}出生于{o}。", "{s}，{o}出生。", "{s}生于{o}。", "{s}的出生日期是{o}。"],
        ["{o}出生", "生于{o}", "出生于{o}"],
    ),
    (
        "毕业院校",
        "人物",
        "学校",
        ["{s}毕业于{o}。", "{s}是{o}的毕业生。", "{s}曾就读于{o}。", "{o}校友{s}近日回到母校。"],
        ["毕业于{o}", "曾就读于{o}"],
    ),
    (
        "职业",
        "人物",
        "职业",
        ["{s}是一名{o}。", "{s}的职业是{o}。", "{o}{s}接受了采访。", "{s}，职业{o}。"],
        ["职业是{o}", "是一名{o}", "现为{o}"],
    ),
    (
        "国籍",
        "人物",
        "国家",
        ["{s}拥有{o}国籍。", "{s}的国籍是{o}。", "{s}，{o}国籍。"],
        ["{o}国籍", "国籍为{o}"],
    ),
    (
        "妻子",
        "人物",
        "人物",
        ["{s}的妻子是{o}。", "{s}与妻子{o}出席了活动。", "{o}是{s}的妻子。"],
        ["妻子是{o}", "娶了{o}"],
    ),
    (
        "丈夫",
        "人物",
        "人物",
        ["{s}的丈夫是{o}。", "{o}是{s}的丈夫。", "{s}和丈夫{o}育有一子。"],
        ["丈夫是{o}", "嫁给了{o}"],
    ),
    (
        "父亲",
        "人物",
        "人物",
        ["{s}的父亲是{o}。", "{o}是{s}的父亲。", "{s}的父亲{o}也曾从事这一行业。"],
        ["父亲是{o}", "其父为{o}"],
    ),
    (
        "作者",
        "作品",
        "人物",
        [
            "《{s}》是{o}创作的小说。",
            "《{s}》的作者是{o}。",
            "{o}的代表作《{s}》广受好评。",
            "{o}写了《{s}》。",
        ],
        ["作者是{o}", "由{o}创作"],
    ),
    (
        "出版社",
        "作品",
        "机构",
        ["《{s}》由{o}出版。", "{o}出版了《{s}》。", "《{s}》是{o}出版的图书。"],
        ["由{o}出版", "{o}出版"],
    ),
    (
        "导演",
        "影视作品",
        "人物",
        ["《{s}》的导演是{o}。", "{o}执导了电影《{s}》。", "《{s}》由{o}执导。"],
        ["由{o}执导", "导演是{o}"],
    ),
    (
        "主演",
        "影视作品",
        "人物",
        ["《{s}》由{o}主演。", "{o}在《{s}》中担任主演。", "《{s}》的主演是{o}。"],
        ["{o}主演", "主演为{o}"],
    ),
    (
        "上映时间",
        "影视作品",
        "日期",
        ["《{s}》于{o}上映。", "电影《{s}》在{o}上映。", "《{s}》的上映时间是{o}。"],
        ["于{o}上映", "{o}上映"],
    ),
    (
        "歌手",
        "歌曲",
        "人物",
        ["《{s}》是{o}演唱的歌曲。", "{o}演唱了《{s}》。", "《{s}》的演唱者是{o}。"],
        ["由{o}演唱", "演唱者是{o}"],
    ),
    (
        "作曲",
        "歌曲",
        "人物",
        ["《{s}》由{o}作曲。", "{o}为《{s}》谱曲。", "《{s}》的作曲是{o}。"],
        ["{o}作曲", "由{o}谱曲"],
    ),
    (
        "成立时间",
        "公司",
        "日期",
        ["{s}成立于{o}。", "{s}于{o}成立。", "{o}，{s}正式成立。"],
        ["成立于{o}", "于{o}成立"],
    ),
    (
        "创始人",
        "公司",
        "人物",
        ["{s}的创始人是{o}。", "{o}创办了{s}。", "{s}由{o}创立。"],
        ["由{o}创立", "创始人是{o}"],
    ),
    (
        "总部地点",
        "公司",
        "地点",
        ["{s}总部位于{o}。", "{s}的总部设在{o}。", "总部位于{o}的{s}发布了新产品。"],
        ["总部位于{o}", "总部设在{o}"],
    ),
    (
        "董事长",
        "公司",
        "人物",
        ["{s}董事长{o}出席了发布会。", "{o}担任{s}董事长。", "{s}的董事长是{o}。"],
        ["董事长是{o}", "现任董事长为{o}"],
    ),
    (
        "校长",
        "学校",
        "人物",
        ["{s}校长{o}在开学典礼上致辞。", "{o}出任{s}校长。", "{s}的校长是{o}。"],
        ["校长是{o}", "现任校长为{o}"],
    ),
    (
        "所在城市",
        "学校",
        "地点",
        ["{s}位于{o}。", "{s}坐落在{o}。", "{o}的{s}历史悠久。"],
        ["坐落于{o}", "位于{o}"],
    ),
    (
        "所属国家",
        "地点",
        "国家",
        ["{s}是{o}的一座城市。", "{s}位于{o}。", "{o}的{s}以风景闻名。"],
        ["位于{o}", "隶属于{o}"],
    ),
    (
        "首都",
        "国家",
        "地点",
        ["{s}的首都是{o}。", "{o}是{s}的首都。"],
        ["首都是{o}", "首都为{o}"],
    ),
]

PREDICATES: list[Predicate] = [Predicate(n, s, o) for n, s, o, _, _ in _PRED_SPECS]
_TEMPLATES = {n: (full, clause) for n, _, _, full, clause in _PRED_SPECS}
_EXCLUSIVE = {frozenset({"妻子", "丈夫"})}

# --- name pools -------------------------------------------------------------------------------
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
    "余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯"
    "龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华飞鑫波斌宇浩凯健俊帆帅旭宁欣琳"
    "晨辰瑶怡佳雪梅玉婷颖慧莉倩婕睿博文轩宏志晓建国家振鹏海峰岩亮"
)
_PLACE = (
    "江河湖山川源泉岭峰溪阳安宁昌平丰泰兴隆庆德成都州城沙津湘汉淮洛临青云梧桐松柏枫桂"
    "榕杉荆楚吴越闽滇黔陇秦晋燕赣皖"
)
_PLACE_SUFFIX = ["", "", "市", "县", "镇"]
_COUNTRY = "阿尔巴尼亚加利福萨摩克斯坦维索马达图瓦诺塔奥伦比特拉蒙哥多佛纳乌兹卡"
_COUNTRY_SUFFIX = ["", "", "国", "共和国", "王国"]
_ORG_HEAD = "华辰新星光明东方远大正通恒信天元金鼎博雅启文海纳百川卓越鸿运瑞丰长青"
_SCHOOL_SUFFIX = ["大学", "师范大学", "理工大学", "中学", "第一中学", "学院", "职业技术学院"]
_COMPANY_SUFFIX = ["科技有限公司", "集团", "股份有限公司", "传媒", "电子", "实业有限公司", "网络科技公司"]
_PRESS_SUFFIX = ["出版社", "人民出版社", "文艺出版社", "大学出版社", "书局", "教育出版社"]
_BOOK_WORDS = ["春天", "远方", "故事", "山河", "归来", "夜色", "少年", "旧梦", "星辰", "大地", "时光", "河流",
               "记忆", "灯火", "南方", "北方", "雨季", "长夜", "花园", "微光"]  # fmt: skip
_FILM_WORDS = ["决战", "风暴", "迷城", "追击", "英雄", "危机", "龙门", "暗流", "烈火", "边境", "天际", "无声",
               "海岸", "密码", "狂潮", "孤岛"]  # fmt: skip
_FILM_SUFFIX = ["", "", "之战", "传奇", "风云", "往事", "2", "3"]
_SONG_WORDS = ["晴天", "月光", "思念", "微风", "心愿", "流星", "告白", "彩虹", "约定", "远行", "听海", "花开",
               "初雪", "晚风", "呼吸"]  # fmt: skip
_JOB_FIELD = ["软件", "建筑", "机械", "外科", "儿科", "刑事", "民事", "小学", "中学", "摄影", "服装", "室内",
              "数据", "电气", "化工", "平面"]  # fmt: skip
_JOB_ROLE = ["工程师", "医生", "律师", "教师", "设计师", "分析师", "顾问", "技术员"]
_ASCII_UP = string.ascii_uppercase
_LEADS = ["", "", "", "", "据报道，", "资料显示，", "近日，", "公开信息显示，", "据了解，"]
_TEST_MOD = 5  # one name in _TEST_MOD goes to the test pool


def _person(rng: random.Random) -> str:
    given = rng.choice(_GIVEN) if rng.random() < 0.3 else rng.choice(_GIVEN) + rng.choice(_GIVEN)
    return rng.choice(_SURNAMES) + given


def _place(rng: random.Random) -> str:
    return "".join(rng.sample(_PLACE, 2)) + rng.choice(_PLACE_SUFFIX)


def _country(rng: random.Random) -> str:
    return "".join(rng.sample(_COUNTRY, rng.choice((2, 3, 3)))) + rng.choice(_COUNTRY_SUFFIX)


def _org_head(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return "".join(rng.choice(_ASCII_UP) for _ in range(rng.randint(2, 4)))
    return "".join(rng.sample(_ORG_HEAD, 2))


def _school(rng: random.Random) -> str:
    return "".join(rng.sample(_PLACE, 2)) + rng.choice(_SCHOOL_SUFFIX)


def _company(rng: random.Random) -> str:
    return _org_head(rng) + rng.choice(_COMPANY_SUFFIX)


def _press(rng: random.Random) -> str:
    return "".join(rng.sample(_ORG_HEAD, 2)) + rng.choice(_PRESS_SUFFIX)


def _book(rng: random.Random) -> str:
    a, b = rng.sample(_BOOK_WORDS, 2)
    r = rng.random()
    if r < 0.05:
        return rng.choice(["Python", "Java", "Linux", "Web"]) + a
    return a + ("的" if r < 0.5 else "") + b


def _film(rng: random.Random) -> str:
    a, b = rng.sample(_FILM_WORDS, 2)
    return (a + b if rng.random() < 0.5 else a) + rng.choice(_FILM_SUFFIX)


def _song(rng: random.Random) -> str:
    a, b = rng.sample(_SONG_WORDS, 2)
    return a if rng.random() < 0.3 else a + b


def _job(rng: random.Random) -> str:
    return rng.choice(_JOB_FIELD) + rng.choice(_JOB_ROLE)


_MAKERS = {
    "人物": _person,
    "地点": _place,
    "国家": _country,
    "机构": _press,
    "学校": _school,
    "公司": _company,
    "作品": _book,
    "影视作品": _film,
    "歌曲": _song,
    "职业": _job,
}


def _date(rng: random.Random) -> tuple[str, int]:
    year = rng.randint(1900, 2023)
    r = rng.random()
    if r < 0.2:
        return f"{year}年", year
    if r < 0.6:
        return f"{year}年{rng.randint(1, 12)}月", year
    return f"{year}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日", year


def _split_of(key: str) -> str:
    return "test" if zlib.crc32(key.encode("utf-8")) % _TEST_MOD == 0 else "train"


def _sample_name(etype: str, split: str, rng: random.Random) -> str:
    """A name of ``etype`` from the ``split`` pool (pools are disjoint by a stable hash)."""
    while True:
        if etype == "日期":
            name, year = _date(rng)
            key = f"日期|{year}"
        else:
            name = _MAKERS[etype](rng)
            key = f"{etype}|{name}"
        if _split_of(key) == split:
            return name


# --- rendering --------------------------------------------------------------------------------
_SLOT = re.compile(r"\{([so])\}")
Segment = tuple[str, str | None]  # (text, slot key or None)


def _segments(template: str, s_key: str, o_key: str) -> list[Segment]:
    out: list[Segment] = []
    pos = 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            out.append((template[pos : m.start()], None))
        out.append(("", s_key if m.group(1) == "s" else o_key))
        pos = m.end()
    if pos < len(template):
        out.append((template[pos:], None))
    return out


@dataclass
class _Draft:
    """Segments plus the entities and triples they refer to (by slot key)."""

    segments: list[Segment]
    names: dict[str, tuple[str, str]]  # slot key -> (name, type)
    triples: list[tuple[str, str, str]]  # (s_key, predicate, o_key)


def _draft_single_subject(rng: random.Random, split: str, k: int, tag: str) -> _Draft:
    while True:
        stype = rng.choice(PREDICATES).subject_type
        preds = [p for p in PREDICATES if p.subject_type == stype]
        if len(preds) >= k:
            break
    while True:
        chosen = rng.sample(preds, k)
        names = {p.name for p in chosen}
        if not any(ex <= names for ex in _EXCLUSIVE):
            break
    s_key = f"{tag}s"
    used: set[str] = set()
    names_by_key: dict[str, tuple[str, str]] = {}

    def fresh(etype: str) -> str:
        while True:
            n = _sample_name(etype, split, rng)
            if n not in used:
                used.add(n)
                return n

    names_by_key[s_key] = (fresh(stype), stype)
    triples = []
    for i, p in enumerate(chosen):
        o_key = f"{tag}o{i}"
        names_by_key[o_key] = (fresh(p.object_type), p.object_type)
        triples.append((s_key, p.name, o_key))
    segs: list[Segment] = [(rng.choice(_LEADS), None)]
    bracket = stype in ("作品", "影视作品", "歌曲")
    if k == 1 or rng.random() < 0.3:
        # first triple with a full template, the rest as clauses
        full = [t for t in _TEMPLATES[chosen[0].name][0] if k == 1 or t.startswith(("{s}", "《{s}》"))]
        first = rng.choice(full)
        if k > 1:
            first = first.rstrip("。")
        segs += _segments(first, s_key, triples[0][2])
        rest = triples[1:]
        for _, pname, o_key in rest:
            segs.append(("，", None))
            segs += _segments(rng.choice(_TEMPLATES[pname][1]), s_key, o_key)
    else:
        segs += _segments("《{s}》" if bracket else "{s}", s_key, "")
        if rng.random() < 0.6:
            segs.append(("，", None))
        for i, (_, pname, o_key) in enumerate(triples):
            if i:
                segs.append(("，", None))
            segs += _segments(rng.choice(_TEMPLATES[pname][1]), s_key, o_key)
    if not segs[-1][0].endswith("。"):
        segs.append(("。", None))
    return _Draft(segs, names_by_key, triples)


def _realize(drafts: list[_Draft]) -> dict | None:
    """Concatenate drafts into a record, or None if an entity string is ambiguous in the text."""
    parts: list[str] = []
    starts: dict[str, int] = {}
    pos = 0
    names: dict[str, tuple[str, str]] = {}
    for d in drafts:
        names.update(d.names)
        for text, key in d.segments:
            if key is not None:
                text = d.names[key][0]
                starts[key] = pos
            parts.append(text)
            pos += len(text)
    text = "".join(parts)
    distinct = {n for n, _ in names.values()}
    if len(distinct) != len(names) or any(text.count(n) != 1 for n in distinct):
        return None
    spo_list = []
    ents: dict[tuple[int, int, str], dict] = {}
    for d in drafts:
        for s_key, pname, o_key in d.triples:
            (s, st), (o, ot) = names[s_key], names[o_key]
            spo_list.append(
                {
                    "subject": s,
                    "subject_type": st,
                    "subject_start": starts[s_key],
                    "predicate": pname,
                    "object": o,
                    "object_type": ot,
                    "object_start": starts[o_key],
                }
            )
            for name, etype, start in ((s, st, starts[s_key]), (o, ot, starts[o_key])):
                ents[(start, start + len(name), etype)] = {
                    "text": name,
                    "type": etype,
                    "start": start,
                    "end": start + len(name),
                }
    entities = [ents[k] for k in sorted(ents)]
    return {"text": text, "spo_list": spo_list, "entities": entities}


def _record(rng: random.Random, split: str) -> dict:
    r = rng.random()
    while True:
        if r < 0.05:
            target = rng.randint(150, 400)
            drafts: list[_Draft] = []
            length = 0
            while length < target - 20:
                d = _draft_single_subject(rng, split, rng.choice((1, 2, 3)), f"d{len(drafts)}")
                drafts.append(d)
                length += sum(len(t) for t, _ in d.segments) + 12
        elif r < 0.2:
            drafts = [_draft_single_subject(rng, split, 1, f"d{i}") for i in range(2)]
        else:
            k = rng.choices((1, 2, 3), weights=(0.45, 0.35, 0.2))[0]
            drafts = [_draft_single_subject(rng, split, k, "d0")]
        rec = _realize(drafts)
        if rec is not None and (r >= 0.05 or 150 <= len(rec["text"]) <= 400):
            return rec


def generate(seed: int, n_train: int = 3000, n_test: int = 300) -> tuple[list[dict], list[dict]]:
    """Generate ``(train, test)`` records; test names come from pools disjoint from train's."""
    rng = random.Random(seed)
    train = [_record(rng, "train") for _ in range(n_train)]
    test = [_record(rng, "test") for _ in range(n_test)]
    return train, test


def generate_dev(seed: int, n_dev: int = 300) -> list[dict]:
    """Dev records: names from the test pool (unseen in training), a stream apart from ``generate``'s."""
    rng = random.Random(f"dev-{seed}")
    return [_record(rng, "test") for _ in range(n_dev)]


def uie_schema() -> list[str | dict[str, list[str]]]:
    """A PaddleNLP Taskflow schema covering the data: ``{subject_type: [predicates]}`` + object-only types."""
    subj_types = list(dict.fromkeys(p.subject_type for p in PREDICATES))
    object_only = [t for t in ENTITY_TYPES if t not in subj_types]
    rel = [{t: [p.name for p in PREDICATES if p.subject_type == t]} for t in subj_types]
    return [*object_only, *rel]


def schema_dict() -> dict:
    """The ``schema.json`` content."""
    return {
        "entity_types": list(ENTITY_TYPES),
        "predicates": [
            {"name": p.name, "subject_type": p.subject_type, "object_type": p.object_type} for p in PREDICATES
        ],
    }


def _pool_chars() -> str:
    words = _BOOK_WORDS + _FILM_WORDS + _FILM_SUFFIX + _SONG_WORDS + _JOB_FIELD + _JOB_ROLE
    suffixes = _PLACE_SUFFIX + _COUNTRY_SUFFIX + _SCHOOL_SUFFIX + _COMPANY_SUFFIX + _PRESS_SUFFIX
    return "".join([_SURNAMES, _GIVEN, _PLACE, _COUNTRY, _ORG_HEAD, *words, *suffixes, *_LEADS])


def write_dataset(
    out_dir: Path, seed: int = 0, n_train: int = 3000, n_test: int = 300, n_dev: int | None = None
) -> Path:
    """Write train/dev/test ``.jsonl``, schema.json and vocab.txt into ``out_dir``; return it.

    ``n_dev`` defaults to ``n_test``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = generate(seed, n_train, n_test)
    dev = generate_dev(seed, n_test if n_dev is None else n_dev)
    for name, rows in (("train.jsonl", train), ("dev.jsonl", dev), ("test.jsonl", test)):
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        (out_dir / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "schema.json").write_text(
        json.dumps(schema_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    vocab_texts = [r["text"] for r in train + dev + test]
    vocab_texts += [_pool_chars(), *ENTITY_TYPES, *(p.name for p in PREDICATES), "的"]
    vocab_texts += [string.ascii_letters + string.digits, "《》，。、：；！？（）"]
    build_vocab(vocab_texts, out_dir / "vocab.txt")
    logger.info("wrote %d train / %d dev / %d test records to %s", len(train), len(dev), len(test), out_dir)
    return out_dir


def main() -> None:
    """CLI: ``python -m conversion.demo_data --out DIR [--seed N]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=300)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    write_dataset(args.out, args.seed, args.n_train, args.n_test)


if __name__ == "__main__":
    main()
