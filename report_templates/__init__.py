"""The report: Bokeh figures placed by jinja2 templates into one self-contained HTML file."""
