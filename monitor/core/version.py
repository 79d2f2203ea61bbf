"""monitor's version: one place, read by the package (``monitor.__version__``), setup.cfg and run.json;
CHANGELOG.md says what each version changed for its users."""

VERSION = "0.2.0"
