"""Emergency-call categories grouped by what they say about crowd safety, from a YAML file.

A dispatch feed (China's 110, a US 911 CAD feed) has its own category codes and texts. A
categories file maps them onto a few groups that matter for crowds (``crowding``, ``disorder``,
``fire``, ``medical``, ``theft``, ``traffic``, ``other``), each with a ``weight`` in [0, 1]: how
much a call of that group says about a crowd-safety problem. The default file is
``infra/calls/categories.yaml``.

Matching rule, applied by :meth:`Categories.assign`:

1. a call whose code is listed (exactly, after trimming spaces) under a group's ``codes`` gets
   that group; codes are a controlled vocabulary, so a code match beats any text match;
2. otherwise, a call whose text matches one of a group's ``texts`` gets that group; each text is
   a case-insensitive regular expression searched anywhere in the text (a plain word is a
   substring match);
3. within each step, the first group in file order wins;
4. otherwise the call is ``other``, which the file must define (with its weight) and which has
   no codes or texts of its own.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crowdwatch.site import load_yaml_model

__all__ = ["OTHER", "Categories", "CategoriesError", "CategoryGroup", "load_categories"]

OTHER = "other"


class CategoriesError(ValueError):
    """A categories file that cannot be used; the message names the file and the field."""


class CategoryGroup(BaseModel):
    """One group: its name, crowd-relevance weight, and the codes and texts that select it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    weight: float = Field(ge=0.0, le=1.0)
    codes: list[str] = Field(default_factory=list)
    texts: list[str] = Field(default_factory=list)

    @field_validator("codes")
    @classmethod
    def _trimmed_codes(cls, codes: list[str]) -> list[str]:
        return [code.strip() for code in codes]

    @field_validator("texts")
    @classmethod
    def _valid_regexes(cls, texts: list[str]) -> list[str]:
        # Checked with polars' own engine: its syntax is not Python's (no look-around).
        for i, text in enumerate(texts):
            if not text:
                raise ValueError(f"item {i}: an empty pattern would match every call")
            try:
                pl.Series([""]).str.contains(text)
            except pl.exceptions.ComputeError as exc:
                lines = [line.strip() for line in str(exc).splitlines()]
                reason = next((line for line in lines if line.startswith("error:")), lines[0])
                raise ValueError(f"item {i}: {text!r} is not a valid regex ({reason})") from None
        return texts

    def text_pattern(self) -> str | None:
        """All of the group's texts as one case-insensitive regex, or None if it has none."""
        if not self.texts:
            return None
        return "(?i)" + "|".join(f"(?:{text})" for text in self.texts)


class Categories(BaseModel):
    """The groups of a categories file, in file order; ``other`` is the fallback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups_: list[CategoryGroup] = Field(alias="groups", min_length=1)

    @model_validator(mode="after")
    def _check_groups(self) -> Categories:
        names = [group.name for group in self.groups_]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"duplicate group names {duplicates}")
        if OTHER not in names:
            raise ValueError(f"a group named {OTHER!r} is needed for calls that match nothing")
        i = names.index(OTHER)
        if self.groups_[i].codes or self.groups_[i].texts:
            raise ValueError(f"groups.{i}: {OTHER!r} is the fallback and takes no codes or texts")
        return self

    @property
    def groups(self) -> list[str]:
        """Group names in file order."""
        return [group.name for group in self.groups_]

    def weight_of(self, group: str) -> float:
        """The weight of a group by name.

        Raises:
            KeyError: there is no such group.
        """
        for candidate in self.groups_:
            if candidate.name == group:
                return candidate.weight
        raise KeyError(f"no category group {group!r}; the groups are {self.groups}")

    def assign(self, codes: pl.Series, texts: pl.Series) -> pl.DataFrame:
        """Assign each call its group and weight from its category code and text.

        Vectorised: one ``pl.when`` chain of ``is_in`` and ``str.contains`` tests. A null code
        or text matches nothing.

        Args:
            codes: the calls' category codes (strings, may be null).
            texts: the calls' category texts, same length (strings, may be null).

        Returns:
            A frame with one row per call and columns ``group`` (String) and ``weight``
            (Float64).

        Raises:
            ValueError: the two series differ in length.
        """
        if len(codes) != len(texts):
            raise ValueError(
                f"codes and texts must be the same length, got {len(codes)} and {len(texts)}"
            )
        code = pl.col("code").str.strip_chars()
        text = pl.col("text")
        tests: list[tuple[pl.Expr, CategoryGroup]] = [
            (code.is_in(group.codes), group) for group in self.groups_ if group.codes
        ]
        for group in self.groups_:
            pattern = group.text_pattern()
            if pattern is not None:
                tests.append((text.str.contains(pattern), group))
        other = self.groups_[self.groups.index(OTHER)]
        group_expr: pl.Expr = pl.lit(other.name, dtype=pl.String)
        weight_expr: pl.Expr = pl.lit(other.weight, dtype=pl.Float64)
        # Built from the last test to the first, so that the first test is checked first.
        for condition, group in reversed(tests):
            group_expr = pl.when(condition).then(pl.lit(group.name)).otherwise(group_expr)
            weight_expr = pl.when(condition).then(pl.lit(group.weight)).otherwise(weight_expr)
        frame = pl.DataFrame(
            {"code": codes.cast(pl.String), "text": texts.cast(pl.String)},
            schema={"code": pl.String, "text": pl.String},
        )
        return frame.select(
            group_expr.cast(pl.String).alias("group"),
            weight_expr.cast(pl.Float64).alias("weight"),
        )


def load_categories(path: Path | str) -> Categories:
    """Load and validate a categories file.

    Raises:
        CategoriesError: the file is missing, is not YAML, or a field is wrong; the message
            names the file and the field.
    """
    return load_yaml_model(
        path,
        Categories,
        CategoriesError,
        missing="categories file not found (set CROWDWATCH_CALL_CATEGORIES_FILE)",
        expected="a list of groups",
    )
