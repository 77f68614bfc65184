"""``crowdwatch report``: the dashboards' key panels as one self-contained HTML page.

`queries` picks the panels and runs their SQL on the warehouse (`build_report`); `page` draws
the result as HTML with inline SVG (`render_page`, `write_report`, `summary`).
"""
