"""Unit conversions, each written once. Every formula in shared/ that converts a unit uses these names."""

from __future__ import annotations

SECONDS_PER_HOUR = 3600.0
#: 1 Wh = 3600 J.
JOULES_PER_WH = 3600.0
#: 1 kWh = 3.6e6 J.
JOULES_PER_KWH = 3_600_000.0
WATTS_PER_KILOWATT = 1000.0
GRAMS_PER_KG = 1000.0
MILLI = 1000.0
#: Hours in the monthly projection: 24 h x 30 days, as the old cost exporter (OpenCost uses 730).
DAYS_PER_MONTH = 30.0
HOURS_PER_MONTH = 24.0 * DAYS_PER_MONTH
