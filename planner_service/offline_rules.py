"""A deterministic, rule-based planner: turns a description of a game moment into
an image plan without calling a model.

Pure: no I/O, no logging, no mutable globals; the stdlib and the catalogue only. Inputs are validated by
the caller; this module only has to be total and byte-for-byte reproducible.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from imagegen import catalogue

# Maps may carry a few labels, so only the other types forbid text outright.
_TAIL_DEFAULT = "Highly detailed, coherent composition, no text, no watermark."
_TAIL_MAP = "Highly detailed, no watermark."

# Canonical context keys; keys are lower-cased and '-'/'.' become '_' before lookup.
_ALIASES: Mapping[str, str] = MappingProxyType({
    "campaign_setting": "setting", "campaign": "setting", "world": "setting", "species": "race",
    "ancestry": "race", "character_class": "class", "sex": "gender", "gear": "equipment",
    "weapons": "weapon", "armour": "armor", "time": "time_of_day", "character_name": "name",
    "place": "location",
})
_KNOWN = frozenset({"name", "race", "class", "gender", "age", "appearance", "armor", "weapon",
                   "equipment", "location", "time_of_day", "weather", "mood", "lighting", "setting"})
_IDENTITY = frozenset({"name", "race", "class", "gender", "age", "appearance"})
_PLACE = frozenset({"location", "time_of_day", "weather"})
# Which recognised keys help each framing; e.g. a map gains nothing from a character's gear,
# an item shot has its own studio lighting, a location should stay empty of people.
_RELEVANT: Mapping[str, frozenset[str]] = MappingProxyType({
    "scene": _KNOWN,
    "character": _KNOWN,
    "portrait": _IDENTITY | {"armor", "setting", "mood", "lighting"},
    "creature": frozenset({"name", "age", "appearance", "setting", "mood", "lighting"}) | _PLACE,
    "location": _PLACE | {"setting", "mood", "lighting"},
    "item": frozenset({"setting", "mood"}),
    "map": frozenset({"location", "setting"}),
})


def _words(terms: str, plural: bool = False) -> re.Pattern[str]:
    """Whole-word, case-insensitive alternation of '|'-separated terms.

    A hyphen next to a match disqualifies it, so "battle-scarred" is not a battle,
    "half-orc" is not an orc and a "dragon-shaped amulet" is an item.
    """
    alts = "|".join(re.escape(t).replace(r"\ ", r"[\s-]+") for t in terms.split("|"))
    suffix = "(?:s|es)?" if plural else ""
    return re.compile(rf"(?<![\w-])(?:{alts}){suffix}(?![\w-])", re.IGNORECASE)


_MAP_WORDS = _words("map|maps|battlemap|battlemaps|floor plan|floorplan|dungeon layout|layout|"
                    "top-down|top down|overhead view|bird's-eye view|birds-eye view|cartography")
_PORTRAIT_WORDS = _words("portrait|portraits|headshot|head shot|close-up|closeup|face|mugshot")
_SCENE_WORDS = _words(
    "fight|fights|fighting|fought|battle|battles|battling|attack|attacks|attacking|attacked|ambush|"
    "ambushes|ambushed|ambushing|charge|charges|charging|charged|duel|duels|dueling|duelling|clash|"
    "clashes|clashing|combat|chase|chases|chasing|chased|flee|flees|fleeing|fled|cast|casts|casting|"
    "strike|strikes|striking|struck|swings|swinging|swung|slay|slays|slaying|slew|defend|defends|"
    "defending|escape|escapes|escaping|raid|raids|raiding|skirmish|brawl|melee|versus|vs|confront|"
    "confronts|confronting|sneaks|sneaking|we|party|adventurers|companions|crowd|army|armies")
_CREATURE_WORDS = _words(
    "dragon|wyrm|wyvern|drake|beholder|owlbear|goblin|hobgoblin|bugbear|kobold|orc|troll|ogre|lich|"
    "vampire|werewolf|zombie|skeleton|ghoul|ghost|wraith|demon|devil|fiend|elemental|golem|hydra|"
    "basilisk|griffon|griffin|gryphon|manticore|chimera|mimic|gelatinous cube|mind flayer|illithid|"
    "displacer beast|kraken|tarrasque|wolf|wolves|spider|serpent|unicorn|frost giant|fire giant|"
    "hill giant|stone giant|storm giant|cloud giant|beast|monster|creature|undead|aberration",
    plural=True)
_CHARACTER_WORDS = _words(
    "my character|my pc|player character|npc|adventurer|hero|heroine|paladin|wizard|rogue|fighter|"
    "cleric|ranger|bard|druid|monk|barbarian|sorcerer|warlock|artificer|knight|mage|warrior|priest|"
    "priestess|thief|assassin|necromancer|witch|archer|mercenary|sellsword|innkeeper|merchant|"
    "blacksmith|noble|king|queen|prince|princess|dwarf|dwarves|elf|elves|half-elf|half-orc|halfling|"
    "gnome|tiefling|dragonborn|aasimar|genasi|goliath|tabaxi|firbolg|human",
    plural=True)
_ITEM_WORDS = _words(
    "sword|longsword|greatsword|shortsword|scimitar|rapier|dagger|axe|greataxe|warhammer|hammer|mace|"
    "spear|halberd|longbow|shortbow|crossbow|staff|staves|wand|rod|amulet|necklace|pendant|talisman|"
    "potion|vial|elixir|ring|shield|helm|helmet|gauntlet|crown|cloak|artifact|artefact|relic|scroll|"
    "tome|grimoire|spellbook|orb|gem|chalice|trinket|weapon|magic item",
    plural=True)
_LOCATION_WORDS = _words(
    "tavern|inn|city|town|village|castle|fortress|citadel|palace|manor|forest|woods|jungle|cave|"
    "cavern|ruin|ruins|dungeon|temple|shrine|cathedral|tower|harbor|harbour|port|market|swamp|marsh|"
    "mountain|desert|crypt|tomb|library|throne room|street|bridge|camp|hall|guildhall|valley|lake|"
    "river|coast|island|landscape|vista",
    plural=True)


def _first(pattern: re.Pattern[str], text: str) -> int | None:
    match = pattern.search(text)
    return match.start() if match else None


def _canonical_key(key: str) -> str:
    k = re.sub(r"[-.\s]+", "_", key.strip().lower())
    return _ALIASES.get(k, k)


def _normalise(text: object) -> str:
    return " ".join(str(text).split())


def infer_image_type(prompt: str, context: Mapping[str, str] | None = None) -> str:
    """Guess the image type from keywords.

    Precedence, most explicit first:
    1. the user named a framing: map or portrait words (earliest one wins, so
       "a portrait of a dragon" is a portrait and "a map of the castle" a map);
    2. action or a group ("fights", "ambush", "the party") means a scene;
    3. a named subject: creature, character or item noun, earliest one wins
       (the subject usually comes first: "a goblin with a dagger" is a creature);
    4. a character sheet in the context (race/class) means a character;
    5. a place with no action or subject is a location;
    6. otherwise a scene.
    """
    text = _normalise(prompt)
    framing = [(pos, kind) for kind, pos in (("map", _first(_MAP_WORDS, text)),
                                             ("portrait", _first(_PORTRAIT_WORDS, text)))
               if pos is not None]
    if framing:
        return min(framing)[1]
    if _SCENE_WORDS.search(text):
        return "scene"
    subjects = [(pos, rank, kind) for rank, (kind, pattern) in enumerate(
        (("creature", _CREATURE_WORDS), ("character", _CHARACTER_WORDS), ("item", _ITEM_WORDS)))
        if (pos := _first(pattern, text)) is not None]
    if subjects:
        return min(subjects)[2]
    if any(_canonical_key(k) in ("race", "class") and _normalise(v)
           for k, v in (context or {}).items()):
        return "character"
    if _LOCATION_WORDS.search(text):
        return "location"
    return "scene"


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _with_article(value: str) -> str:
    """'warhammer' -> 'a warhammer'; leaves names, plurals and phrases with a determiner alone."""
    words = value.split()
    if (len(words) <= 2 and value[:1].islower() and not value.endswith("s")
            and words[0].lower() not in ("a", "an", "the", "his", "her", "their", "its", "my", "two")):
        return _article(value)
    return value


def _context_text(context: Mapping[str, str] | None, image_type: str) -> str:
    """Render the context as prompt sentences, iterating keys in sorted order."""
    known: dict[str, str] = {}
    extra: list[str] = []
    relevant = _RELEVANT[image_type]
    ctx = context or {}
    for key in sorted(ctx):
        value, canon = _normalise(ctx[key]), _canonical_key(key)
        if not value:
            continue
        if canon in _KNOWN:
            if canon in relevant and value not in known.get(canon, "").split(", "):
                known[canon] = f"{known[canon]}, {value}" if canon in known else value
        else:
            extra.append(f"{_normalise(key)}: {value}")

    sentences: list[str] = []
    age = known.get("age", "")
    descriptor = " ".join(v for v in ((age if not age.isdigit() else ""), known.get("gender"),
                                      known.get("race"), known.get("class")) if v)
    identity = _article(descriptor) if descriptor and descriptor != age else ""
    head = ", ".join(p for p in (known.get("name"), identity) if p)
    if age and (age.isdigit() or not identity):
        head = ", ".join(p for p in (head, f"aged {age}" if age.isdigit() else f"age: {age}") if p)
    gear = [f"{verb} {_with_article(known[k]) if k == 'weapon' else known[k]}"
            for k, verb in (("armor", "wearing"), ("weapon", "wielding"), ("equipment", "carrying"))
            if k in known]
    if head:
        sentences.append("Featuring " + ", ".join([head, *gear]))
    elif gear:
        sentences.append("The character is " + ", ".join(gear))
    if "appearance" in known:
        sentences.append(f"Appearance: {known['appearance']}")
    where = [f"set in {known['location']}"] if "location" in known else []
    if "setting" in known:
        where.append(f"{known['setting']} setting")
    if "time_of_day" in known:
        tod = known["time_of_day"]
        where.append(f"in the {tod}" if tod.lower() in ("morning", "afternoon", "evening") else f"at {tod}")
    if where:
        clause = ", ".join(where)
        sentences.append(clause[:1].upper() + clause[1:])
    sentences += [f"{label}: {known[k]}" for k, label in
                  (("weather", "Weather"), ("mood", "Mood"), ("lighting", "Lighting")) if k in known]
    if extra:
        sentences.append("Details: " + "; ".join(extra))
    return " ".join(_sentence(s) for s in sentences)


def _sentence(text: str) -> str:
    """Close with a full stop and capitalise, unless that would change the length ('ß' -> 'SS')."""
    first = text[:1].upper()
    text = first + text[1:] if len(first) == len(text[:1]) else text
    return text if not text or text[-1] in ".!?…" else text + "."


def _cut_words(text: str, limit: int) -> str:
    """Longest prefix of at most `limit` chars that ends on a word boundary."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = text[:limit]
    if not text[limit].isspace():
        space = cut.rfind(" ")
        cut = cut[:space] if space >= 0 else ""
    return cut.rstrip(" ,;:-–—")


@dataclass(frozen=True)
class OfflinePlan:
    enhanced_prompt: str
    image_type: str  # a name in catalogue.IMAGE_TYPES
    style: str  # a name in catalogue.STYLES
    size: str  # "WIDTHxHEIGHT"


# What each reference role asks of the image model, for reference number {n}.
_REFERENCE_PHRASES: Mapping[str, str] = MappingProxyType({
    "subject": "Keep the face, build and gear of the subject in reference {n}.",
    "style": "Follow the palette and brushwork of reference {n}.",
    "edit": "Edit reference {n}, changing only what this prompt describes.",
})


def reference_text(roles: Sequence[str]) -> str:
    """The fixed sentences that tell an image model how to use each reference image, in
    order ("reference 1" is the first); roles are catalogue.REFERENCE_ROLES names."""
    return " ".join(_REFERENCE_PHRASES[role].format(n=n) for n, role in enumerate(roles, 1))


def plan_offline(prompt: str, *, image_type: str | None = None, style: str | None = None,
                 size: str | None = None, context: Mapping[str, str] | None = None,
                 references: Sequence[str] = ()) -> OfflinePlan:
    """Plan an image: the user's description first (image models weigh the start of a
    prompt most, and the offline renderer captions it), then framing, how to use the
    reference images (references: their roles, in order), context and style."""
    description = _normalise(prompt)
    kind = image_type or infer_image_type(description, context)
    look = style or catalogue.DEFAULT_STYLE
    spec = catalogue.IMAGE_TYPES[kind]
    head = spec.framing + "."
    if references:  # at most MAX_REFERENCE_IMAGES short sentences: kept whole, like the framing
        head = f"{head} {reference_text(references)}"
    tail = f"Style: {catalogue.STYLES[look].words}. {_TAIL_MAP if kind == 'map' else _TAIL_DEFAULT}"
    details = _context_text(context, kind)

    # The framing and style must survive the cap, so only the description and context are
    # cut. The context keeps up to a third of the room so a long description cannot crowd
    # out the character sheet. The 3 reserved chars are a joining space and two full stops.
    room = catalogue.MAX_PROMPT_CHARS - len(head) - len(tail) - 2 - 3
    if len(description) + len(details) > room:
        details_room = min(len(details), room // 3)
        description = _cut_words(description, room - details_room)
        details = _cut_words(details, room - len(description))
    parts = (_sentence(description), head, _sentence(details), tail)
    return OfflinePlan(" ".join(p for p in parts if p), kind, look, size or spec.default_size)
