"""A small synthetic relation-extraction corpus, generated offline and deterministically.

Why: CI smoke training (`tiny_cpu`) and the quickstart need data that is always there, needs no
download, carries no third-party licence, and is learnable by a tiny model in minutes on two CPU
cores. Every template and name pool below was written for this project; no sentence comes from a
benchmark.

Each example is one English sentence built from a hand-written template: a single fact, two or
three facts, facts beside distractor entities that take part in no relation, or no relation at
all. Slots are filled compositionally (first name x surname, organisation stem x kind, cities and
countries, dates in four formats). The generator emits the word list itself (punctuation as
separate tokens), so entity spans are exact word indices; entities never overlap and are at most
`MAX_ENTITY_WIDTH` words wide.

Splits: "train", "dev" and "test" draw first names, surnames, organisation stems, cities and
countries from disjoint parts of each pool (3/5, 1/5, 1/5), so held-out scores measure
generalisation to unseen names within the same template family. The templates, organisation kinds
(Bank, Labs, ...), middle initials and dates are shared: held-out scores say nothing about unseen
phrasings.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from types import MappingProxyType

from relex_jax.data.readers import Example

ENTITY_TYPES = ("person", "organization", "location", "date")
# Relation type -> (head entity type, tail entity type). All directed.
RELATION_SIGNATURES = MappingProxyType({
    "works for": ("person", "organization"),
    "founded": ("person", "organization"),
    "born in": ("person", "location"),
    "lives in": ("person", "location"),
    "located in": ("organization", "location"),
    "born on": ("person", "date"),
})
RELATION_TYPES = tuple(RELATION_SIGNATURES)
MAX_ENTITY_WIDTH = 4  # "March 12 , 1987"
SPLITS = ("train", "dev", "test")

# --------------------------------------------------------------------------------------------------
# Pools (split between train / dev / test by position, see `_part`)
# --------------------------------------------------------------------------------------------------

_FIRST_NAMES = """
Anna Marco Priya Tomas Elena David Sofia Kenji Amara Lukas Maria Omar Ingrid Rafael Mei Fatima
Jonas Leila Pavel Grace Mateo Yuki Hannah Samuel Nadia Erik Clara Ahmed Olivia Viktor Rosa Daniel
Aisha Felix Irene Kwame Laura Mikhail Nora Pedro Sara Tobias Zainab Henrik Julia Arjun Beatriz
Colin Dana Emil Freya Gabriel Hana Ivan Jasmine Karl Lena Malik Nina Oscar Paula Quentin Rhea
Stefan Tara Umar Vera Walter Ximena Yusuf Zoe Adrian Bianca Carlos Delia Emeka Fiona Goran Helena
Idris Jana Kofi Lucia Martin Noor Otto Petra Rohan Selma Theo
""".split()
_SURNAMES = """
Berg Okafor Lindqvist Moreau Tanaka Novak Fischer Alvarez Haddad Kowalski Brennan Costa Dimitrov
Eriksen Ferreira Gallagher Hoffmann Ibrahim Jansen Kuznetsov Larsen Mendes Nakamura O'Neill Petrov
Quinn Rossi Schneider Takahashi Umarov Varga Weber Xu Yamamoto Zielinski Abbott Bauer Castillo
Dubois Engel Fontaine Gupta Horvath Ivanova Jovanovic Keller Lambert Mwangi Nilsson Osei Park
Ramirez Sato Tran Underwood Vidal Walsh Yilmaz Zhou Adeyemi Blackwood Carvalho Delgado Farouk
Greco Hartmann Iyer Jensen Kaplan Lopez Marsh Nowak Olsen Patel Reyes Svensson Thorne Ueda Volkov
Whitfield Young Zamora Aydin Bianchi Chandra Doyle Esposito Fraser Lindgren
""".split()
_ORG_STEMS = """
Northwind Bluefield Halvard Corvid Brightwater Stonebridge Redwood Silverline Ironbark Oakmont
Clearpath Greenhill Kestrel Lumen Meridian Nimbus Orion Pinecrest Quartz Riverside Sable Tidewater
Umbra Vantage Westbrook Zenith Amberly Cobalt Driftwood Elmstead Foxglove Granite Harborview Indigo
Juniper Keystone Larkspur Maplewood Northgate Opaline Parkline Quill Rookwood Saltmarsh Thornbury
Upland Verdant Willowby Yarrow Ashgrove Beacon Crestview Dunmore Eastlake Fairhaven Glenmore
Highmoor Ivywood Lowther Moorfield
""".split()
_ORG_KINDS = """
Systems Bank Group Labs Institute Motors Foods Energy Pharmaceuticals Airlines Insurance Media
Partners Holdings Robotics Capital Logistics Textiles Brewing Shipping
""".split()
_ORG_SUFFIXES = ("Inc.", "Ltd", "AG", "Corporation")
# Multi-word names are written with underscores here and split into words when drawn.
_CITIES = """
Lyon Porto Krakow Osaka Nairobi Valencia Leipzig Bergen Tampere Gdansk Seville Bologna Rotterdam
Antwerp Graz Brno Cluj Izmir Pune Kyoto Busan Adelaide Halifax Calgary Denver Portland Tucson
Recife Cordoba Medellin Quito Accra Dakar Tunis Rabat Mombasa Durban Cape_Town New_Haven San_Diego
Buenos_Aires Kuala_Lumpur Rio_de_Janeiro Salt_Lake_City Hong_Kong Tel_Aviv Le_Havre Aarhus Malmo
Tartu Riga Vilnius Ljubljana Plovdiv Thessaloniki Bordeaux Nantes Glasgow Cork Winnipeg
""".split()
_COUNTRIES = """
France Portugal Poland Japan Kenya Spain Germany Norway Finland Italy Belgium Austria Romania
Turkey India South_Korea Australia Canada Brazil Argentina Colombia Ecuador Ghana Senegal Morocco
South_Africa Chile Peru Mexico Sweden Denmark Estonia Ireland Greece Bulgaria New_Zealand
""".split()
_MONTHS = """
January February March April May June July August September October November December
""".split()
_DAY_PRECISION = 2  # date formats below this index name a day ("on"), the others do not ("in")
_DATE_FORMATS = ("{d} {m} {y}", "{m} {d} , {y}", "{m} {y}", "{y}")

# --------------------------------------------------------------------------------------------------
# Templates: `{X1}` is a slot (P person, O organization, L location, D date), `{on D1}` a date slot
# preceded by the preposition its format needs ("on 12 March 1987", "in 1987"). Relations name
# their head and tail slots. Slots not in any relation are distractors.
# --------------------------------------------------------------------------------------------------

_TEMPLATES_SOURCE: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    # works for
    ("{P1} works for {O1} .", (("P1", "works for", "O1"),)),
    ("{P1} is an engineer at {O1} .", (("P1", "works for", "O1"),)),
    ("{P1} , a senior analyst at {O1} , declined to comment .", (("P1", "works for", "O1"),)),
    ("{O1} spokesperson {P1} said the results were encouraging .", (("P1", "works for", "O1"),)),
    ("According to {P1} , who leads the research team at {O1} , demand is rising .", (("P1", "works for", "O1"),)),
    ("{P1} has been employed by {O1} since {D1} .", (("P1", "works for", "O1"),)),
    ("{O1} hired {P1} as its chief financial officer .", (("P1", "works for", "O1"),)),
    # founded
    ("{P1} founded {O1} .", (("P1", "founded", "O1"),)),
    ("{O1} was founded by {P1} .", (("P1", "founded", "O1"),)),
    ("{P1} , the founder of {O1} , will step down next year .", (("P1", "founded", "O1"),)),
    ("{P1} established {O1} {on D1} .", (("P1", "founded", "O1"),)),
    ("{P1} co-founded {O1} with {P2} .", (("P1", "founded", "O1"), ("P2", "founded", "O1"))),
    # born in
    ("{P1} was born in {L1} .", (("P1", "born in", "L1"),)),
    ("Born in {L1} , {P1} studied law before turning to politics .", (("P1", "born in", "L1"),)),
    ("{P1} , a native of {L1} , returned there last week .", (("P1", "born in", "L1"),)),
    ("{L1} is the birthplace of {P1} .", (("P1", "born in", "L1"),)),
    ("{P1} was born and raised in {L1} .", (("P1", "born in", "L1"),)),
    # lives in
    ("{P1} lives in {L1} .", (("P1", "lives in", "L1"),)),
    ("{P1} , who lives in {L1} , won the award .", (("P1", "lives in", "L1"),)),
    ("{P1} now resides in {L1} with two children .", (("P1", "lives in", "L1"),)),
    ("{L1} resident {P1} told reporters the road had been closed for weeks .", (("P1", "lives in", "L1"),)),
    ("{P1} settled in {L1} after retiring .", (("P1", "lives in", "L1"),)),
    ("{P1} has made a home in {L1} .", (("P1", "lives in", "L1"),)),
    # located in
    ("{O1} is based in {L1} .", (("O1", "located in", "L1"),)),
    ("{O1} , headquartered in {L1} , reported higher profits .", (("O1", "located in", "L1"),)),
    ("{O1} has its headquarters in {L1} .", (("O1", "located in", "L1"),)),
    ("The headquarters of {O1} are in {L1} .", (("O1", "located in", "L1"),)),
    ("{O1} moved its main offices to {L1} {on D1} .", (("O1", "located in", "L1"),)),
    ("{O1} operates from a campus in {L1} .", (("O1", "located in", "L1"),)),
    # born on
    ("{P1} was born {on D1} .", (("P1", "born on", "D1"),)),
    ("{P1} ( born {D1} ) is a painter .", (("P1", "born on", "D1"),)),
    ("Born {on D1} , {P1} trained as a nurse .", (("P1", "born on", "D1"),)),
    ("{P1} 's date of birth is {D1} .", (("P1", "born on", "D1"),)),
    ("{P1} , born {on D1} , is a well-known architect .", (("P1", "born on", "D1"),)),
    # two or three facts
    ("{P1} , who was born in {L1} , works for {O1} .", (("P1", "born in", "L1"), ("P1", "works for", "O1"))),
    ("{P1} works for {O1} , which is based in {L1} .", (("P1", "works for", "O1"), ("O1", "located in", "L1"))),
    ("{P1} lives in {L1} and works for {O1} .", (("P1", "lives in", "L1"), ("P1", "works for", "O1"))),
    ("{P1} was born {on D1} in {L1} .", (("P1", "born on", "D1"), ("P1", "born in", "L1"))),
    ("{P1} , who was born {on D1} , joined {O1} last year .", (("P1", "born on", "D1"), ("P1", "works for", "O1"))),
    ("{P1} founded {O1} , a company based in {L1} .", (("P1", "founded", "O1"), ("O1", "located in", "L1"))),
    ("Born in {L1} , {P1} now lives in {L2} .", (("P1", "born in", "L1"), ("P1", "lives in", "L2"))),
    ("{O1} , founded by {P1} , hired {P2} as chief engineer .", (("P1", "founded", "O1"), ("P2", "works for", "O1"))),
    ("{P1} and {P2} both work for {O1} .", (("P1", "works for", "O1"), ("P2", "works for", "O1"))),
    ("{P1} left {O1} to found {O2} .", (("P1", "founded", "O2"),)),
    ("{P1} , who lives in {L1} , founded {O1} {on D1} .", (("P1", "lives in", "L1"), ("P1", "founded", "O1"))),
    (
        "{P1} , born {on D1} in {L1} , lives in {L2} .",
        (("P1", "born on", "D1"), ("P1", "born in", "L1"), ("P1", "lives in", "L2")),
    ),
    ("{P2} , a colleague of {P1} at {O1} , agreed .", (("P1", "works for", "O1"), ("P2", "works for", "O1"))),
    # facts beside distractors
    ("{P1} , who works for {O1} , met {P2} in {L1} .", (("P1", "works for", "O1"),)),
    ("{P1} , born in {L1} , visited {L2} last spring .", (("P1", "born in", "L1"),)),
    ("{P1} , an engineer at {O1} , was interviewed by {P2} in {L1} .", (("P1", "works for", "O1"),)),
    ("{O1} , based in {L1} , was acquired by {O2} {on D1} .", (("O1", "located in", "L1"),)),
    ("{P1} praised {P2} , who was born in {L1} .", (("P2", "born in", "L1"),)),
    ("{P1} , who lives in {L1} , sold shares of {O1} .", (("P1", "lives in", "L1"),)),
    # no relation
    ("{P1} visited {L1} {on D1} .", ()),
    ("{P1} flew to {L1} to meet investors from {O1} .", ()),
    ("{O1} signed a supply agreement with {O2} in {L1} .", ()),
    ("{P1} criticised {O1} in an interview with {P2} .", ()),
    ("{P1} and {P2} spoke at a conference in {L1} {on D1} .", ()),
    ("{O1} sued {O2} {on D1} .", ()),
    ("Fans in {L1} welcomed {P1} {on D1} .", ()),
)

_SLOT_TYPES = {"P": "person", "O": "organization", "L": "location", "D": "date"}
_PIECE = re.compile(r"\{(on )?([POLD]\d)\}|\S+")


def _compile(text: str, relations) -> tuple[list, tuple]:
    """Template text -> pieces (a word, or (slot, with_preposition)); checks relation signatures."""
    pieces = []
    for match in _PIECE.finditer(text):
        pieces.append((match[2], bool(match[1])) if match[2] else match[0])
    slots = [p[0] for p in pieces if isinstance(p, tuple)]
    if len(slots) != len(set(slots)):
        raise ValueError(f"template repeats a slot: {text!r}")
    for head, label, tail in relations:
        if head not in slots or tail not in slots:
            raise ValueError(f"template {text!r}: relation {label!r} names a missing slot")
        if (_SLOT_TYPES[head[0]], _SLOT_TYPES[tail[0]]) != RELATION_SIGNATURES[label]:
            raise ValueError(f"template {text!r}: {head} {label} {tail} breaks the type signature")
    return pieces, relations


_TEMPLATES = tuple(_compile(text, relations) for text, relations in _TEMPLATES_SOURCE)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _part(pool: list[str], split: str) -> list[str]:
    """The split's share of a pool: items at positions 0-2 mod 5 train, 3 dev, 4 test."""
    keep = {"train": (0, 1, 2), "dev": (3,), "test": (4,)}[split]
    return [item for i, item in enumerate(pool) if i % 5 in keep]


class _Pools:
    """One split's name pools and the mention drawers for each slot kind."""

    def __init__(self, split: str):
        self.first, self.last = _part(_FIRST_NAMES, split), _part(_SURNAMES, split)
        self.stems = _part(_ORG_STEMS, split)
        self.places = _part(_CITIES, split) + _part(_COUNTRIES, split)

    def person(self, rng: random.Random) -> list[str]:
        middle = [f"{rng.choice('ABCDEFGHJKLMNPRSTW')}."] if rng.random() < 0.2 else []
        return [rng.choice(self.first), *middle, rng.choice(self.last)]

    def organization(self, rng: random.Random) -> list[str]:
        form = rng.random()
        if form < 0.1:
            return [rng.choice(self.stems)]
        name = [rng.choice(self.stems), rng.choice(_ORG_KINDS)]
        return name + [rng.choice(_ORG_SUFFIXES)] if form > 0.8 else name

    def location(self, rng: random.Random) -> list[str]:
        return rng.choice(self.places).split("_")

    def date(self, rng: random.Random) -> tuple[list[str], str]:
        index = rng.randrange(len(_DATE_FORMATS))
        text = _DATE_FORMATS[index].format(d=rng.randint(1, 28), m=rng.choice(_MONTHS), y=rng.randint(1930, 2015))
        return text.split(), "on" if index < _DAY_PRECISION else "in"


def _example(template, pools: _Pools, rng: random.Random) -> Example:
    pieces, relations = template
    tokens: list[str] = []
    entities: list[tuple[int, int, str]] = []
    entity_of_slot: dict[str, int] = {}
    used: set[tuple[str, ...]] = set()
    for piece in pieces:
        if isinstance(piece, str):
            tokens.append(piece)
            continue
        slot, with_preposition = piece
        kind = _SLOT_TYPES[slot[0]]
        while True:  # two slots of one kind get different mentions
            drawn = getattr(pools, kind)(rng)
            words, preposition = drawn if kind == "date" else (drawn, None)
            if tuple(words) not in used:
                break
        used.add(tuple(words))
        if with_preposition:
            tokens.append(preposition)
        entity_of_slot[slot] = len(entities)
        entities.append((len(tokens), len(tokens) + len(words) - 1, kind))
        tokens.extend(words)
    return Example(
        tokens=tuple(tokens),
        entities=tuple(entities),
        relations=tuple((entity_of_slot[head], entity_of_slot[tail], label) for head, label, tail in relations),
    )


def generate_examples(n: int, seed: int = 0, split: str = "train") -> list[Example]:
    """`n` examples, a pure function of (n, seed, split); a smaller `n` gives a prefix of a larger
    one. Entities are in text order with inclusive ends, as `Example` wants."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {SPLITS})")
    pools = _Pools(split)
    rng = random.Random(f"relex-jax synthetic/{split}/{seed}")  # str seeds hash stably across runs
    return [_example(rng.choice(_TEMPLATES), pools, rng) for _ in range(n)]


def write_jsonl(path, n: int, seed: int = 0, split: str = "train") -> Path:
    """Write `generate_examples(n, seed, split)` in the ../shared/data JSON Lines format
    (end-exclusive spans), atomically: a crash leaves any earlier file at `path` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as sink:
            for i, ex in enumerate(generate_examples(n, seed, split)):
                record = {
                    "id": f"synthetic-{split}-{seed}-{i}",
                    "tokens": list(ex.tokens),
                    "entities": [{"start": s, "end": e + 1, "type": label} for s, e, label in ex.entities],
                    "relations": [{"head": h, "tail": t, "type": label} for h, t, label in ex.relations],
                }
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
