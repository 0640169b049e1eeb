"""Territories: ISO 3166-1 alpha-2 codes, the EU group, aliases, and the overlap with a licence's exclusions."""

from __future__ import annotations

import pytest

from components.runtime.territory import (
    EU_MEMBERS,
    HUNYUAN_LICENCE_EXCLUDED,
    ISO_3166_ALPHA2,
    TerritoryError,
    canonical_code,
    describe_territories,
    normalise_territories,
    overlap,
)


def test_code_lists() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    assert len(EU_MEMBERS) == 27 and EU_MEMBERS <= ISO_3166_ALPHA2
    assert "GB" not in EU_MEMBERS and {"DE", "FR", "GR", "HR", "IE"} <= EU_MEMBERS
    assert all(len(code) == 2 and code.isupper() for code in ISO_3166_ALPHA2)


def test_canonical_code() -> None:
    assert canonical_code(" us ") == "US"
    assert canonical_code("eu") == "EU"  # groups are kept as written
    assert canonical_code("UK") == "GB" and canonical_code("el") == "GR"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("XX", "unknown territory 'XX'"),
        ("USA", "use two-letter ISO 3166-1 alpha-2 country codes such as US, DE, GB or JP, or EU"),
        ("", "unknown territory ''"),
        ("Europe" * 10, "unknown territory 'EuropeEuropeEurop...'"),
    ],
)
def test_unknown_codes_name_the_fix(code: str, text: str) -> None:
    with pytest.raises(TerritoryError, match="use two-letter ISO 3166-1") as caught:
        canonical_code(code)
    assert text in str(caught.value)


def test_normalise_expands_groups_and_aliases() -> None:
    codes = normalise_territories(["eu", "UK", "us", "DE"])
    assert codes == EU_MEMBERS | {"GB", "US"}
    with pytest.raises(TerritoryError, match="'ZZ'"):
        normalise_territories(["US", "ZZ"])


def test_overlap_with_the_hunyuan_licence() -> None:
    assert HUNYUAN_LICENCE_EXCLUDED == ("EU", "GB", "KR")
    assert overlap(["US", "CA", "JP"], HUNYUAN_LICENCE_EXCLUDED) == []
    assert overlap(["US", "DE", "uk", "KR"], HUNYUAN_LICENCE_EXCLUDED) == ["DE", "GB", "KR"]
    assert overlap(["EU"], HUNYUAN_LICENCE_EXCLUDED) == sorted(EU_MEMBERS)
    assert overlap(["CH", "NO"], ["EU"]) == []  # Switzerland and Norway are not EU members


def test_describe_collapses_complete_groups() -> None:
    assert describe_territories(HUNYUAN_LICENCE_EXCLUDED) == "EU, GB, KR"
    assert describe_territories(["DE", "FR"]) == "DE, FR"
    assert describe_territories(overlap(["EU", "US"], HUNYUAN_LICENCE_EXCLUDED)) == "EU"
