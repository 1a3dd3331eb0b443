"""Mapping between Splitwise category names and splitlog `Category` values.

Splitwise exports the subcategory name only ("Dining out", "Heat/gas",
"TV/Phone/Internet"), and several parents share the name "Other". Names are
matched without regard to case. Each splitlog category has one Splitwise name
that the export writes back (`SPLITWISE_NAMES`). When an imported name is not
that name, the importer keeps the original in the expense notes, so that an
export restores it.
"""

from __future__ import annotations

#: Splitwise subcategory name, lower case, to the splitlog `Category` name.
_TO_SPLITLOG = {
    # Uncategorized
    "general": "CATEGORY_GENERAL",
    "other": "CATEGORY_GENERAL",
    # Entertainment
    "games": "CATEGORY_ENTERTAINMENT",
    "movies": "CATEGORY_ENTERTAINMENT",
    "music": "CATEGORY_ENTERTAINMENT",
    "entertainment": "CATEGORY_ENTERTAINMENT",
    "sports": "CATEGORY_SPORTS",
    # Food and drink
    "food and drink": "CATEGORY_FOOD_AND_DRINK",
    "dining out": "CATEGORY_DINING_OUT",
    "groceries": "CATEGORY_GROCERIES",
    "liquor": "CATEGORY_FOOD_AND_DRINK",
    # Home
    "electronics": "CATEGORY_SHOPPING",
    "furniture": "CATEGORY_FURNITURE",
    "household supplies": "CATEGORY_HOUSEHOLD_SUPPLIES",
    "maintenance": "CATEGORY_MAINTENANCE",
    "mortgage": "CATEGORY_RENT",
    "pets": "CATEGORY_PETS",
    "rent": "CATEGORY_RENT",
    "services": "CATEGORY_MAINTENANCE",
    # Life
    "childcare": "CATEGORY_CHILDCARE",
    "clothing": "CATEGORY_CLOTHING",
    "education": "CATEGORY_EDUCATION",
    "gifts": "CATEGORY_GIFTS",
    "insurance": "CATEGORY_INSURANCE",
    "medical expenses": "CATEGORY_MEDICAL",
    "taxes": "CATEGORY_TAXES",
    "shopping": "CATEGORY_SHOPPING",
    # Transportation
    "transportation": "CATEGORY_TRANSPORTATION",
    "bicycle": "CATEGORY_TRANSPORTATION",
    "bus/train": "CATEGORY_TRANSPORTATION",
    "car": "CATEGORY_TRANSPORTATION",
    "gas/fuel": "CATEGORY_TRANSPORTATION",
    "parking": "CATEGORY_TRANSPORTATION",
    "taxi": "CATEGORY_TRANSPORTATION",
    "hotel": "CATEGORY_TRAVEL",
    "plane": "CATEGORY_TRAVEL",
    "travel": "CATEGORY_TRAVEL",
    # Utilities
    "utilities": "CATEGORY_UTILITIES",
    "cleaning": "CATEGORY_HOUSEHOLD_SUPPLIES",
    "electricity": "CATEGORY_UTILITIES",
    "heat/gas": "CATEGORY_UTILITIES",
    "trash": "CATEGORY_UTILITIES",
    "tv/phone/internet": "CATEGORY_UTILITIES",
    "water": "CATEGORY_UTILITIES",
}

#: The Splitwise name that an export writes for each splitlog category.
SPLITWISE_NAMES = {
    "CATEGORY_GENERAL": "General",
    "CATEGORY_FOOD_AND_DRINK": "Food and drink",
    "CATEGORY_GROCERIES": "Groceries",
    "CATEGORY_DINING_OUT": "Dining out",
    "CATEGORY_TRANSPORTATION": "Transportation",
    "CATEGORY_TRAVEL": "Travel",
    "CATEGORY_RENT": "Rent",
    "CATEGORY_UTILITIES": "Utilities",
    "CATEGORY_ENTERTAINMENT": "Entertainment",
    "CATEGORY_SHOPPING": "Shopping",
    "CATEGORY_HOUSEHOLD_SUPPLIES": "Household supplies",
    "CATEGORY_FURNITURE": "Furniture",
    "CATEGORY_MAINTENANCE": "Maintenance",
    "CATEGORY_CLOTHING": "Clothing",
    "CATEGORY_MEDICAL": "Medical expenses",
    "CATEGORY_INSURANCE": "Insurance",
    "CATEGORY_GIFTS": "Gifts",
    "CATEGORY_EDUCATION": "Education",
    "CATEGORY_CHILDCARE": "Childcare",
    "CATEGORY_PETS": "Pets",
    "CATEGORY_SPORTS": "Sports",
    "CATEGORY_TAXES": "Taxes",
}

#: Splitwise's category of payments between members.
PAYMENT = "Payment"


def to_splitlog(splitwise_name: str) -> str:
    """Return the splitlog `Category` name for a Splitwise category name.

    Unknown names map to CATEGORY_GENERAL; the caller keeps the original name.
    """
    return _TO_SPLITLOG.get(splitwise_name.strip().lower(), "CATEGORY_GENERAL")


def to_splitwise(category: str) -> str:
    """Return the Splitwise name that an export writes for a splitlog category."""
    return SPLITWISE_NAMES.get(category, "General")


def is_round_trip(splitwise_name: str) -> bool:
    """Return whether exporting the mapped category writes `splitwise_name` back."""
    return to_splitwise(to_splitlog(splitwise_name)) == splitwise_name
