"""PSP and bank file formats: one module per format, each a pure ``parse(data, source_file)``."""
