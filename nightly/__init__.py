"""The nightly workspace: run folders, the catalog diff, the validation gate, LATEST and retention."""
