"""Import and export of Splitwise "Export as spreadsheet" files.

`csvformat` reads and writes the CSV, `convert` turns rows into splitlog
expenses and settlements, `export` writes them back, and `identity` derives
the ids that make a repeated import create nothing twice. These modules are
pure. `importer` and `exporter` talk to a running splitlog over gRPC.
"""
