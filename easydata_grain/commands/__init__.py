"""What the ``easydata-grain`` command runs: inspect, preview and validate a dataset at a URL,
and the end-to-end demo. Each is a function of the library; ``cli.py`` parses arguments and
prints."""
