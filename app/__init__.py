"""The crowdwatch application: the top floor that wires the others together.

`cli` is the ``crowdwatch`` command; `registry` finds the pipelines; `runner` runs them (replay,
recovery, progress); `simulate` makes a day of records; `demo` runs the day through the risk
pipeline and prints its story; `report` draws the dashboards' key panels as one HTML page. It
may import every floor below (`pipelines`, `dashboards`, `forecasts`, `detectors`, the core);
nothing imports it.
"""
