"""monitor's version: one place, read by the package (``monitor.__version__``), setup.cfg and run.json."""

VERSION = "0.1.0"
