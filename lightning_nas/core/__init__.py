"""The frame every method shares and the contracts callbacks and reports rely on: ``NASModule`` (what every
method declares), the capability types (what only some can do), and evaluation of supernet children."""
