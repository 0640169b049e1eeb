"""Territories: where a campaign's videos will be shown, as ISO 3166-1 alpha-2 country codes.

A campaign may declare ``territory: [US, DE, ...]``. Codes are upper-cased; the group code ``EU`` stands for
the 27 member states of the European Union. Two common spellings that are not ISO codes are read as the
ISO code they mean, and the campaign gets a warning saying so: ``UK`` (ISO: ``GB``, the United Kingdom) and
``EL`` (the EU's own code for Greece; ISO: ``GR``).

Model licences can exclude territories. The Tencent Hunyuan Community License of HunyuanCustom,
HunyuanVideo-Avatar, HunyuanVideo-Foley and HunyuanVideo 1.5 excludes the European Union, the United Kingdom
and South Korea (`HUNYUAN_LICENCE_EXCLUDED`). A registered model version carries its licence's excluded
territories, and the `plan` step rejects a campaign whose territory overlaps them (`overlap`).

Errors: `TerritoryError` (a ValueError) for a code that is neither ISO 3166-1 alpha-2 nor a known group or
alias; its message names the code and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

__all__ = [
    "ALIASES",
    "EU_MEMBERS",
    "GROUPS",
    "HUNYUAN_LICENCE_EXCLUDED",
    "ISO_3166_ALPHA2",
    "TerritoryError",
    "canonical_code",
    "describe_territories",
    "normalise_territories",
    "overlap",
]

# ISO 3166-1 alpha-2, the 249 officially assigned codes.
ISO_3166_ALPHA2: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
    BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
    FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
    IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
    PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
    YT ZA ZM ZW
    """.split()  # noqa: SIM905
)

# The 27 member states of the European Union (since 1 February 2020), by ISO code.
EU_MEMBERS: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()  # noqa: SIM905
)

GROUPS: Mapping[str, frozenset[str]] = {"EU": EU_MEMBERS}

# Spellings that are not ISO 3166-1 codes but are unambiguous: read as the ISO code, with a note.
ALIASES: Mapping[str, str] = {
    "UK": "GB",  # the United Kingdom's ISO code is GB
    "EL": "GR",  # the EU's code for Greece
}

# Tencent Hunyuan Community License, "Territory": worldwide excluding the EU, the United Kingdom and South Korea.
HUNYUAN_LICENCE_EXCLUDED: tuple[str, ...] = ("EU", "GB", "KR")


class TerritoryError(ValueError):
    """A territory code that is not ISO 3166-1 alpha-2, a group (EU) or a known alias (UK, EL)."""


def canonical_code(code: str) -> str:
    """The canonical spelling of one code: upper-cased, aliases replaced (UK -> GB), groups kept (EU).

    Raises `TerritoryError` naming the code and the fix.
    """
    if not isinstance(code, str):
        raise TerritoryError(
            f"territory {code!r} is not a code; write a two-letter ISO 3166-1 code such as 'US'"
        )
    text = code.strip().upper()
    if text in ISO_3166_ALPHA2 or text in GROUPS:
        return text
    if text in ALIASES:
        return ALIASES[text]
    close = difflib.get_close_matches(text, [*sorted(ISO_3166_ALPHA2), *GROUPS], n=3, cutoff=0.5)
    guess = f" (did you mean {', '.join(close)}?)" if close and len(text) == 2 else ""
    shown = code if len(code) <= 20 else code[:17] + "..."
    raise TerritoryError(
        f"unknown territory {shown!r}{guess}; use two-letter ISO 3166-1 alpha-2 country codes such as US, DE, "
        "GB or JP, or EU for the 27 member states of the European Union"
    )


def normalise_territories(codes: Iterable[str]) -> frozenset[str]:
    """The ISO codes that `codes` cover: aliases replaced, groups expanded (EU -> its 27 members).

    Raises `TerritoryError` for the first unknown code.
    """
    out: set[str] = set()
    for code in codes:
        canonical = canonical_code(code)
        out.update(GROUPS.get(canonical, (canonical,)))
    return frozenset(out)


def overlap(campaign_territory: Iterable[str], excluded: Iterable[str]) -> list[str]:
    """The ISO codes both in a campaign's territory and in a licence's excluded territories, sorted.

    Both sides may use groups and aliases (``["EU", "UK", "KR"]``); the result lists member states.
    An empty list means the campaign may use the model everywhere it is shown.
    """
    return sorted(normalise_territories(campaign_territory) & normalise_territories(excluded))


def describe_territories(codes: Iterable[str]) -> str:
    """A short, readable list of codes: a complete group is written as its name, e.g. 'EU, GB, KR'."""
    left = set(normalise_territories(codes))
    parts = []
    for name, members in GROUPS.items():
        if members <= left:
            parts.append(name)
            left -= members
    return ", ".join([*parts, *sorted(left)])
